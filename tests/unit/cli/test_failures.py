"""Failures become one line and an exit code: storage outages (3), user errors (2), bugs (a traceback)."""

from __future__ import annotations

import pytest

from mdps_ray.cli.failures import no_space, storage_unavailable, user_error


class EndpointConnectionError(Exception):  # botocore's name; matched by name, not imported
    pass


class UserCodeException(Exception):  # Ray Data: the actor's error arrives as text only
    pass


def test_an_outage_is_found_in_the_chain_or_in_an_actors_traceback_text() -> None:
    try:
        try:
            raise EndpointConnectionError('Could not connect to the endpoint URL: "http://s3/x"')
        except EndpointConnectionError as inner:
            raise RuntimeError("scoring failed") from inner
    except RuntimeError as err:
        assert storage_unavailable(err) == 'EndpointConnectionError: Could not connect to the endpoint URL: "http://s3/x"'
    text = ("Traceback (most recent call last):\n  File ...\nbotocore.exceptions.ClientError: An error occurred "
            "(SlowDown) when calling the PutObject operation: Please reduce your request rate.\n")
    assert storage_unavailable(UserCodeException(text)).startswith("ClientError: An error occurred (SlowDown)")
    assert storage_unavailable(UserCodeException("ValueError: expected a model")) is None


def test_a_user_error_wrapped_by_ray_is_found_and_a_bug_is_not() -> None:
    try:
        try:
            raise ValueError("expected unique image ids, got duplicates such as ['a']")
        except ValueError as inner:
            raise UserCodeException("UDF failed") from inner
    except UserCodeException as err:
        assert str(user_error(err)).startswith("expected unique image ids")
    text = "Traceback ...\nbotocore.exceptions.NoCredentialsError: Unable to locate credentials\n"
    assert user_error(UserCodeException(text)) == "Unable to locate credentials"
    unknown = TypeError("AioSession.__init__() got an unexpected keyword argument 'bogus'")
    assert user_error(unknown) == ("expected storage_options that the filesystem accepts, got AioSession.__init__() "
                                   "got an unexpected keyword argument 'bogus'")
    assert user_error(TypeError("f() got an unexpected keyword argument 'x'")) is None  # a bug of ours: a traceback
    assert user_error(KeyError("bug")) is None and storage_unavailable(KeyError("bug")) is None


def test_a_full_disk_is_found_in_the_chain_or_in_an_actors_text_and_is_resumable(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC inside Ray Data's UserCodeException was a traceback; now one line, exit 3."""
    import errno

    from mdps_ray.cli import commands

    full = OSError(errno.ENOSPC, "No space left on device", "/data/out/r/_staging/part-1.parquet")
    try:
        try:
            raise full
        except OSError as inner:
            raise RuntimeError("upload failed") from inner
    except RuntimeError as err:
        assert no_space(err) == "/data/out/r/_staging/part-1.parquet"
    text = "Traceback ...\nOSError: [Errno 28] No space left on device: '/data/out/r/maps/part-1.npz'\n"
    assert no_space(UserCodeException(text)) == "/data/out/r/maps/part-1.npz"
    assert no_space(UserCodeException("ValueError: expected a model")) is None

    def fails(args: object) -> int:
        raise UserCodeException(text)

    monkeypatch.setattr(commands, "cmd_runs", fails)
    assert commands.main(["runs", "/tmp/x"]) == 3
    err = capsys.readouterr().err.strip()
    assert err == ("mdps: error: no space left on /data/out/r/maps/part-1.npz; free space and rerun the same "
                   "command to resume")


def test_mdps_debug_shows_the_traceback_behind_a_one_line_error(capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from mdps_ray.cli import commands

    argv = ["config", "show", "--set", "sampler.stage2.rho=-1"]
    assert commands.main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err
    monkeypatch.setenv("MDPS_DEBUG", "1")
    assert commands.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1].startswith("mdps: error:")
