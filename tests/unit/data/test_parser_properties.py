"""Property tests of the parsers that meet user input: for any generated names, labels, URIs and override strings,
each input is a record, an error row or one line of configuration error — never a traceback, never a path that
leaves its folder, never a secret echoed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdps_ray.config.jobs import ScoreJobConfig
from mdps_ray.config.method import ConfigError, MdpsConfig
from mdps_ray.config.overrides import apply_overrides, validate
from mdps_ray.data.records import IMAGE_SUFFIXES, list_folder, read_manifest_file
from mdps_ray.storage.runs import object_key

SECRET = "hunter2-s3cr3t"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

keys = st.sampled_from(["sampler.stage2.rho", "maps.crop", "score.k", "tiling.enabled", "train.lr", "runtime.tf32",
                        "sampler.mask.mode", "nosuch.key", "prior", "maps", "", "storage_options.secret"])
values = st.one_of(st.text(max_size=20), st.integers().map(str), st.floats(allow_nan=True).map(str),
                   st.sampled_from(["null", "[1, 2]", "{a: 1}", "true", "2026-13-45", "[[[", "{", "!!python/object:x"]))
separators = st.sampled_from(["=", ":", " ", "==", ""])


@FAST
@given(key=keys, sep=separators, value=values)
def test_any_method_override_is_a_config_or_one_line(key: str, sep: str, value: str) -> None:
    try:
        cfg = apply_overrides(MdpsConfig(), [f"{key}{sep}{value}"])
    except ConfigError as err:
        assert "\n" not in str(err) and str(err).startswith(("expected", "invalid", "unknown"))
        return
    assert isinstance(cfg, MdpsConfig)


@FAST
@given(sep=separators.filter(lambda s: "=" not in s), tail=st.text(min_size=0, max_size=10))
def test_a_malformed_item_never_echoes_what_follows_its_key(sep: str, tail: str) -> None:
    with pytest.raises(ConfigError) as err:
        apply_overrides(MdpsConfig(), [f"storage_options.secret{sep}{SECRET}{tail}"])
    assert SECRET not in str(err.value)


@FAST
@given(key=st.sampled_from(["date", "run_id", "batch_size", "storage_options", "max_error_fraction", "split"]),
       value=values)
def test_any_job_override_is_a_job_or_one_line_that_hides_credentials(key: str, value: str) -> None:
    base = validate(ScoreJobConfig, {"model": "m", "data": "d", "out": "o"})
    item = f"{key}={value}" if key != "storage_options" else f"storage_options={{secret: {value!r}, key: [{SECRET}]}}"
    try:
        job = apply_overrides(base, [item])
    except ConfigError as err:
        assert "\n" not in str(err) and SECRET not in str(err)
        return
    assert isinstance(job, ScoreJobConfig)


@FAST
@given(name=st.text(min_size=1, max_size=40))
def test_no_name_from_the_data_leaves_its_folder(name: str) -> None:
    key = object_key(name)
    assert "/" not in key and "\\" not in key and key not in ("", ".", "..")
    assert os.path.basename(key) == key and not os.path.isabs(key)
    assert (key == name) == ("~" not in key)  # kept as it is, or hashed: never silently altered


labels = st.one_of(st.none(), st.sampled_from(["0", "1", "", "2", "-1", "yes", "0.0", "nan", "1e3", "ok"]))
uris = st.one_of(st.sampled_from(["a.png", "b/c.png", "s3://bucket/x.png", "foo://y.png", "http://h/z.png"]),
                 st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=",\"\n\r"),
                         min_size=1, max_size=15))


@FAST
@given(rows=st.lists(st.tuples(uris, labels), min_size=0, max_size=8))
def test_any_manifest_is_records_or_one_line(rows: list[tuple[str, str | None]], tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    body = "".join(f'"{u}",{"" if lab is None else lab}\n' for u, lab in rows)
    path.write_text("uri,label\n" + body)
    try:
        records = read_manifest_file(str(path))
    except ValueError as err:
        assert "\n" not in str(err).strip() and str(err).startswith("expected")
        return
    assert len(records) == len(rows)
    assert all(r.label in (0, 1, None) for r in records)


names = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1,
                max_size=20).filter(lambda n: n not in (".", ".."))


@FAST
@given(files=st.lists(st.tuples(names, st.sampled_from((*IMAGE_SUFFIXES, ".txt", ""))), min_size=0, max_size=6,
                      unique_by=lambda t: (t[0] + t[1]).lower()))
def test_any_folder_lists_each_image_once_with_ids_that_stay_inside(files: list[tuple[str, str]],
                                                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("folder")
    made = []
    for stem, suffix in files:
        try:
            (root / f"{stem}{suffix}").write_bytes(b"x")
        except OSError:  # a name this filesystem refuses (too long in bytes): not a listing question
            continue
        made.append(f"{stem}{suffix}")
    records = list_folder(str(root))
    expected = sorted(n for n in made if n.lower().endswith(IMAGE_SUFFIXES))
    assert sorted(Path(r.uri).name for r in records) == expected
    assert len({r.image_id for r in records}) == len(records)
    for r in records:
        assert Path(r.uri).parent == root
        assert "/" not in object_key(r.image_id)
