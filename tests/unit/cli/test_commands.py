"""Command-line endings a user meets: a broken YAML file and Ctrl-C are one line, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from mdps_ray.cli import commands


def test_a_broken_yaml_file_is_one_line_naming_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "job.yaml"
    bad.write_text("method:\n  sampler: {stage2: {rho: 3}\n")
    assert commands.main(["config", "show", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mdps: error: expected a YAML mapping in") and "line" in err and "\n" not in err
    bad.write_text("- a list\n")
    assert commands.main(["config", "show", "--config", str(bad)]) == 2
    assert "got a list" in capsys.readouterr().err


def test_ctrl_c_is_one_line_that_says_how_to_resume(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "cmd_score", interrupted)
    assert commands.main(["score", "--model", "m", "--data", "d", "--out", "o"]) == 130
    err = capsys.readouterr().err.strip()
    assert err == "mdps: interrupted; rerun the same command to resume from what was staged"
