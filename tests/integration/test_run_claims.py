"""Exactly once under a resume with another computation and under two writers on one run id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mdps_ray.data.records import list_mvtec
from mdps_ray.orchestration.faults import ENV
from mdps_ray.storage.claims import RunClaimError, acquire
from mdps_ray.storage.runs import RunPaths

pytestmark = pytest.mark.slow


def _score(model: Path, data: Path, out: Path, *extra: str, env: dict | None = None,
           wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    cmd = [sys.executable, "-m", "mdps_ray.cli.commands", "score", "--model", str(model), "--data", str(data),
           "--out", str(out), "--run-id", "r", "--set", "batch_size=2", "--set", "num_actors=1", *extra]
    full_env = {**os.environ, **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=full_env)


def test_a_resume_with_another_config_is_refused_and_restart_starts_over(tiny_model: Path, synthetic_root: Path,
                                                                        tmp_path: Path) -> None:
    first = _score(tiny_model, synthetic_root, tmp_path, env={ENV: json.dumps({"kill_driver_after_batches": 2})})
    assert first.returncode == -9, first.stderr[-2000:]
    other = ("--set", "sampler.stage2.rho=1")
    refused = _score(tiny_model, synthetic_root, tmp_path, *other)
    err = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and err[-1].startswith("mdps: error: run r was started with config_hash"), err
    assert "Traceback" not in refused.stderr and not (tmp_path / "r" / "_SUCCESS").exists()
    restarted = _score(tiny_model, synthetic_root, tmp_path, *other, "--restart")
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    rows = pq.read_table(tmp_path / "r" / "results").to_pylist()
    assert len(rows) == len(list_mvtec(str(synthetic_root), "test"))
    assert len({r["config_hash"] for r in rows}) == 1  # one computation, not two mixed
    assert json.loads((tmp_path / "r" / "run.json").read_text())["config_hash"] == rows[0]["config_hash"]


def test_a_second_writer_on_the_same_run_id_is_refused(tiny_model: Path, synthetic_root: Path,
                                                       tmp_path: Path) -> None:
    writer = _score(tiny_model, synthetic_root, tmp_path, "--set", "batch_size=1", wait=False)
    lock = tmp_path / "r" / "_LOCK"
    deadline = time.monotonic() + 120
    while not lock.exists() and writer.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert lock.exists(), "the first run never took its lease"
    second = _score(tiny_model, synthetic_root, tmp_path)
    assert second.returncode == 2 and "run r is being written by" in second.stderr, second.stderr[-2000:]
    _, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err[-2000:]
    rows = pq.read_table(tmp_path / "r" / "results").to_pylist()
    assert sorted(r["image_id"] for r in rows) == sorted(r.image_id for r in list_mvtec(str(synthetic_root), "test"))
    assert not lock.exists() and not (tmp_path / "r" / "_staging").exists()


def test_the_s3_lease_is_a_conditional_put(s3) -> None:
    paths = RunPaths(f"s3://{s3.bucket}/claims", "r")
    lease = acquire(paths, s3.storage_options, ttl=60)
    with pytest.raises(RunClaimError, match="is being written by"):
        acquire(paths, s3.storage_options, ttl=60)
    lease.release()
    acquire(paths, s3.storage_options, ttl=60).release()
    assert not s3.fs().exists(f"{s3.bucket}/claims/r/_LOCK")


def test_a_kill_after_each_driver_phase_resumes_to_the_uninterrupted_run(tiny_model: Path, synthetic_root: Path,
                                                                         tmp_path: Path) -> None:
    """Scoring itself is killed in tests/integration/test_score_job.py; here the phases around it."""
    def scores(out: Path) -> dict[str, float]:
        return {r["image_id"]: r["score"] for r in pq.read_table(out / "r" / "results").to_pylist()}

    reference = _score(tiny_model, synthetic_root, tmp_path / "reference", "--set", "batch_size=8")
    assert reference.returncode == 0, reference.stderr[-2000:]
    for phase in ("manifest", "committed", "reduced"):
        out = tmp_path / phase
        killed = _score(tiny_model, synthetic_root, out, "--set", "batch_size=8",
                        env={ENV: json.dumps({"kill_driver_at": phase})})
        assert killed.returncode == -9 and not (out / "r" / "_SUCCESS").exists(), (phase, killed.stderr[-2000:])
        resumed = _score(tiny_model, synthetic_root, out, "--set", "batch_size=8")
        assert resumed.returncode == 0, (phase, resumed.stderr[-2000:])
        assert scores(out) == pytest.approx(scores(tmp_path / "reference"), rel=1e-5, abs=1e-6), phase
        assert (out / "r" / "metrics.json").read_text() == (tmp_path / "reference" / "r" / "metrics.json").read_text()


@pytest.mark.parametrize("phase", ["manifest", "committed", "reduced"])
def test_restart_after_a_kill_keeps_nothing_of_the_discarded_attempt(phase: str, tiny_model: Path,
                                                                     synthetic_root: Path, tmp_path: Path) -> None:
    """Killed past the commit and restarted with 3 images, a run held 23 rows (20 stale) while run.json said 3."""
    killed = _score(tiny_model, synthetic_root, tmp_path, "--set", "batch_size=8",
                    env={ENV: json.dumps({"kill_driver_at": phase})})
    assert killed.returncode == -9, killed.stderr[-2000:]
    few = tmp_path / "few"
    few.mkdir()
    for src in sorted((synthetic_root / "test").rglob("*.png"))[:3]:
        (few / f"{src.parent.name}_{src.name}").write_bytes(src.read_bytes())
    restarted = _score(tiny_model, few, tmp_path, "--restart")
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    run = tmp_path / "r"
    rows = pq.read_table(run / "results").to_pylist()
    assert sorted(r["uri"].rsplit("/", 1)[-1] for r in rows) == sorted(p.name for p in few.iterdir())
    record = json.loads((run / "run.json").read_text())
    assert record["counts"]["rows"] == 3 and json.loads((run / "metrics.json").read_text())["overall"]["n_images"] == 3
    chunks = list((run / "maps").glob("*.npz"))
    named = {r["map_uri"].split("#")[0].rsplit("/", 1)[-1] for r in rows}
    assert {c.name for c in chunks} == named  # no map object of the discarded attempt is left
    assert not (run / "_LOCK").exists() and not (run / "_staging").exists()


def test_a_damaged_staged_part_is_quarantined_and_its_images_scored_again(tiny_model: Path, synthetic_root: Path,
                                                                          tmp_path: Path) -> None:
    """A part torn by something else failed every rerun ("Parquet magic bytes not found") until found by hand."""
    first = _score(tiny_model, synthetic_root, tmp_path, env={ENV: json.dumps({"kill_driver_after_batches": 2})})
    assert first.returncode == -9, first.stderr[-2000:]
    parts = sorted((tmp_path / "r" / "_staging").glob("part-*.parquet"))
    assert parts
    torn = parts[0]
    torn_ids = pq.read_table(torn).column("image_id").to_pylist()
    torn.write_bytes(torn.read_bytes()[: len(torn.read_bytes()) // 2])  # a torn copy
    resumed = _score(tiny_model, synthetic_root, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    warning = [line for line in resumed.stderr.splitlines() if "could not be read" in line]
    assert len(warning) == 1 and torn.name in warning[0] and "scored again" in warning[0], resumed.stderr[-2000:]
    assert (tmp_path / "r" / "_quarantine" / f"{torn.name}.bad").exists()
    rows = pq.read_table(tmp_path / "r" / "results").to_pylist()
    ids = [r["image_id"] for r in rows]
    assert sorted(ids) == sorted(r.image_id for r in list_mvtec(str(synthetic_root), "test"))  # each once
    assert set(torn_ids) <= set(ids) and {r["status"] for r in rows} == {"ok"}


def test_sigterm_is_one_line_exit_143_and_the_same_command_resumes(tiny_model: Path, synthetic_root: Path,
                                                                   tmp_path: Path) -> None:
    """SIGTERM (a scheduler stopping the job) ended in rc -6 and Ray's C++ stack; now it is an interrupt."""
    proc = _score(tiny_model, synthetic_root, tmp_path, wait=False)
    assert isinstance(proc, subprocess.Popen)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list((tmp_path / "r" / "_staging").glob("part-*.parquet")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    last = err.strip().splitlines()[-1]
    assert proc.returncode == 143, err[-3000:]
    assert last == "mdps: terminated (SIGTERM); rerun the same command to resume from what was staged", err[-3000:]
    assert "Traceback" not in err and not (tmp_path / "r" / "_SUCCESS").exists()
    resumed = _score(tiny_model, synthetic_root, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ids = [r["image_id"] for r in pq.read_table(tmp_path / "r" / "results").to_pylist()]
    assert sorted(ids) == sorted(r.image_id for r in list_mvtec(str(synthetic_root), "test"))
