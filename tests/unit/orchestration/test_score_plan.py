"""The run policy without Ray: run ids, the nightly skip, what is pending, whether a run may commit."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pyarrow as pa
import pytest

from mdps_ray.config.jobs import ScoreJobConfig
from mdps_ray.config.method import scoring_hash
from mdps_ray.config.presets import DEFAULT
from mdps_ray.orchestration.score_models import CategoryModel, ModelSet
from mdps_ray.orchestration.score_plan import (
    SUBMITTED_JOB_ENV,
    RunFailed,
    check_complete,
    default_run_id,
    method_config,
    pending_rows,
    run_paths,
    skip_already_scored,
    skip_scored_by,
    with_absolute_paths,
)
from mdps_ray.storage.results import rows_to_table
from mdps_ray.storage.runs import RunPaths, commit
from mdps_ray.storage.uris import write_bytes


def _one(digest: str, cfg_hash: str) -> ModelSet:
    """One model directory's ModelSet with the given digest and config hash."""
    return ModelSet("m", {None: CategoryModel("m", DEFAULT, digest, cfg_hash, None)})


MANIFEST = pa.table({"image_id": ["a", "b", "c"], "content_key": ["ka", "kb", "kc"]})


def _row(image_id: str, key: str, status: str = "ok", digest: str = "m", cfg: str = "h") -> dict:
    return {"run_id": "r", "image_id": image_id, "category": "c", "content_key": key, "status": status,
            "model_digest": digest, "config_hash": cfg, "score": 1.0}


def test_the_run_id_is_deterministic_and_names_the_night() -> None:
    job = ScoreJobConfig(model="m", data="d", out="o")
    assert default_run_id(job, "m", "h", None) == default_run_id(job, "m", "h", None)
    assert default_run_id(job, "m", "h", None) != default_run_id(job, "m2", "h", None)
    nightly = job.model_copy(update={"incremental": True})
    assert default_run_id(nightly, "m", "h", "2026-12-01").startswith("nightly-2026-12-01-")


def test_the_nightly_skip_uses_committed_runs_with_the_same_model_and_config() -> None:
    out = "memory://plan-skip/out"
    commit(RunPaths(out, "one"), rows_to_table([_row("a", "ka"), _row("b", "kb", digest="other")]))
    write_bytes(f"{out}/one/_SUCCESS", b"")
    commit(RunPaths(out, "uncommitted"), rows_to_table([_row("c", "kc")]))  # no _SUCCESS: not trusted
    left = skip_already_scored(MANIFEST, out, "m", "h", {})
    assert left.column("image_id").to_pylist() == ["b", "c"]


def test_rows_scored_on_a_gpu_are_not_skipped_by_a_cpu_night_nor_the_other_way() -> None:
    """The device kind is part of the nightly key (issue 18, finding 6); CPU keeps the plain hash."""
    out = "memory://plan-skip-device/out"
    models = _one("m", "h")
    on_gpu = models.on_device("cuda")
    assert models.on_device("cpu") == models and on_gpu.cfg_hash == scoring_hash("h", "cuda") != "h"
    commit(RunPaths(out, "gpu"), rows_to_table([_row("a", "ka", cfg=on_gpu.cfg_hash)]))
    write_bytes(f"{out}/gpu/_SUCCESS", b"")
    commit(RunPaths(out, "cpu"), rows_to_table([_row("b", "kb")]))
    write_bytes(f"{out}/cpu/_SUCCESS", b"")
    assert skip_scored_by(MANIFEST, out, models, {}).column("image_id").to_pylist() == ["a", "c"]
    assert skip_scored_by(MANIFEST, out, on_gpu, {}).column("image_id").to_pylist() == ["b", "c"]


def test_pending_rows_of_a_resume_and_of_an_empty_listing() -> None:
    staged = rows_to_table([_row("b", "kb")])
    assert pending_rows(MANIFEST, staged).column("image_id").to_pylist() == ["a", "c"]
    assert pending_rows(MANIFEST.slice(0, 0), rows_to_table([])).num_rows == 0  # nothing new: an empty filter
    failed = rows_to_table([_row("a", "ka"), _row("b", "kb", status="error")])
    assert pending_rows(MANIFEST, failed).column("image_id").to_pylist() == ["b", "c"]  # error rows are retried


def test_a_run_commits_only_when_complete_and_within_the_error_fraction() -> None:
    ok = rows_to_table([_row("a", "ka"), _row("b", "kb"), _row("c", "kc", status="error")])
    check_complete(MANIFEST, ok, max_error_fraction=0.5)
    with pytest.raises(RunFailed, match="1 are missing"):
        check_complete(MANIFEST, ok.slice(0, 2), max_error_fraction=0.5)
    with pytest.raises(RunFailed, match="could not be scored"):
        check_complete(MANIFEST, ok, max_error_fraction=0.1)


def test_a_plain_run_id_follows_what_the_data_holds(synthetic_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "line"
    shutil.copytree(synthetic_root / "train" / "good", folder)
    job = ScoreJobConfig(model="m", data=str(folder), out=str(tmp_path / "o"))
    first, listed = run_paths(job, _one("m", "h"), None)
    assert listed is not None and listed.num_rows == len(list(folder.glob("*.png")))
    assert run_paths(job, _one("m", "h"), None)[0] == first  # same listing: the same run (resume / committed)
    shutil.copy(next(folder.glob("*.png")), folder / "added.png")
    added, _ = run_paths(job, _one("m", "h"), None)
    (folder / "added.png").unlink()
    next(folder.glob("*.png")).unlink()
    deleted, _ = run_paths(job, _one("m", "h"), None)
    assert len({first.run_id, added.run_id, deleted.run_id}) == 3
    nightly = job.model_copy(update={"incremental": True})
    assert run_paths(nightly, _one("m", "h"), "2026-12-01")[1] is None  # a night is named by its date, not its listing


def test_relative_paths_are_refused_only_inside_a_submitted_job(monkeypatch: pytest.MonkeyPatch) -> None:
    job = ScoreJobConfig(model="/abs/model", data="s3://b/data", out="runs/scores")
    assert Path(with_absolute_paths(job).out).is_absolute()  # local use: resolved against the cwd
    monkeypatch.setenv(SUBMITTED_JOB_ENV, "{}")
    with pytest.raises(ValueError, match="absolute path or a URI for --out in a submitted job"):
        with_absolute_paths(job)
    assert with_absolute_paths(job.model_copy(update={"out": "/shared/scores"})).out == "/shared/scores"


def test_a_refused_run_names_an_example_and_where_the_error_rows_are() -> None:
    rows = rows_to_table([_row("a", "ka"), {**_row("b", "kb", status="error"), "error": "input not found: b.png"}])
    with pytest.raises(RunFailed, match=r"e\.g\. b: input not found: b\.png; nothing was committed .*_staging/"):
        check_complete(MANIFEST.slice(0, 2), rows, max_error_fraction=0.1)


def test_the_driver_warns_when_overrides_do_not_fit_the_calibration(tiny_model: Path) -> None:
    job = ScoreJobConfig(model=str(tiny_model), data="d", out="o")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method_config(job)  # the stored settings: no warning
    with pytest.warns(UserWarning, match="calibration.json of .* was fitted with"):
        method_config(job.model_copy(update={"method": {"maps": {"stage1_weight": 0.5}}}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method_config(job.model_copy(update={"method": {"runtime.channels_last": False}}))  # speed knobs only
