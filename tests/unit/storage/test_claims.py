"""A run's identity and its one-writer lease, on local disk (the S3 lease is in tests/integration)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mdps_ray.storage.claims import RunClaimError, acquire, check_committed, check_identity, leased, sweep_leftovers
from mdps_ray.storage.runs import RunPaths
from mdps_ray.storage.uris import write_bytes

IDENTITY = {"model_digest": "m1", "config_hash": "c1", "data": "/d"}


def test_a_resume_with_another_model_is_refused_unless_restarted(tmp_path: Path) -> None:
    paths = RunPaths(str(tmp_path), "r")
    check_identity(paths, IDENTITY, None)
    write_bytes(f"{paths.staging}/part-x.parquet", b"rows of model m1")
    check_identity(paths, IDENTITY, None)  # the same computation resumes
    with pytest.raises(RunClaimError, match="run r was started with model_digest m1, this command has m2"):
        check_identity(paths, {**IDENTITY, "model_digest": "m2"}, None)
    check_identity(paths, {**IDENTITY, "model_digest": "m2"}, None, restart=True)
    assert not (Path(paths.staging) / "part-x.parquet").exists()
    assert json.loads((Path(paths.staging) / "identity.json").read_text())["model_digest"] == "m2"


def test_a_committed_run_answers_only_the_same_computation() -> None:
    check_committed({"model_digest": "m1", "config_hash": "c1"}, IDENTITY, "r")
    with pytest.raises(RunClaimError, match="committed with config_hash c0"):
        check_committed({"model_digest": "m1", "config_hash": "c0"}, IDENTITY, "r")


def test_one_writer_per_run_and_a_stale_or_dead_writer_is_taken_over(tmp_path: Path) -> None:
    paths = RunPaths(str(tmp_path), "r")
    lock = tmp_path / "r" / "_LOCK"
    with leased(paths, None, ttl=60):
        assert json.loads(lock.read_text())["pid"]
        with pytest.raises(RunClaimError, match=r"run r is being written by .* pid \d+"):
            acquire(paths, None, ttl=60)
    assert not (tmp_path / "r").exists()  # released, and the empty run folder with it

    lock.parent.mkdir()
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "t", "heartbeat": time.time() - 61}))
    acquire(paths, None, ttl=60).release()  # its heartbeat stopped more than ttl ago

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.parent.mkdir(exist_ok=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(gone.stdout), "token": "t",
                                "heartbeat": time.time()}))
    acquire(paths, None, ttl=60).release()  # a killed run on this host: resumed at once, not after ttl
    lock.parent.mkdir(exist_ok=True)
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "t", "heartbeat": time.time()}))
    with pytest.raises(RunClaimError, match="taken over"):
        acquire(paths, None, ttl=60)  # another machine's live writer


def test_a_dead_writers_lease_and_temporary_files_are_swept_and_a_live_ones_are_kept(tmp_path: Path) -> None:
    """A dead writer's _LOCK stayed in a committed run for good; a kill mid-write left manifest.parquet.tmp-*."""
    paths = RunPaths(str(tmp_path), "r")
    run = tmp_path / "r"
    (run / "results").mkdir(parents=True)
    (run / "_SUCCESS").write_text("")
    (run / "manifest.parquet.tmp-0123456789ab").write_bytes(b"half")
    (run / "results" / "part-00000.parquet.tmp-abcdef012345").write_bytes(b"half")
    (run / "results" / "part-00000.parquet").write_bytes(b"kept")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / "_LOCK").write_text(json.dumps({"host": socket.gethostname(), "pid": int(gone.stdout), "token": "t",
                                           "heartbeat": time.time()}))
    removed = sweep_leftovers(paths, None)
    assert sorted(removed) == ["_LOCK", "manifest.parquet.tmp-0123456789ab",
                               "results/part-00000.parquet.tmp-abcdef012345"]
    assert sorted(p.name for p in run.rglob("*")) == ["_SUCCESS", "part-00000.parquet", "results"]
    with leased(paths, None, ttl=60):  # this writer's own live lease stays
        assert sweep_leftovers(paths, None) == [] and (run / "_LOCK").exists()
    (run / "_LOCK").write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "t", "heartbeat": time.time()}))
    assert sweep_leftovers(paths, None, ttl=60) == []  # another machine's live writer
