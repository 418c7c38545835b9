"""Storage faults on a real S3 API: moto behind a fault-injecting proxy (tests/helpers/faulty_s3.py).

Each scenario scores a small set through the proxy, injects a fault once the first batch is staged,
and compares the committed run with an uninterrupted one image by image.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mdps_ray.cli.commands import main
from mdps_ray.storage.runs import RunPaths, read_results
from tests.helpers.faulty_s3 import FaultyS3

pytestmark = pytest.mark.slow


@pytest.fixture
def proxy(s3) -> Iterator[FaultyS3]:
    p = FaultyS3(s3.port)
    yield p
    p.down()


@pytest.fixture
def world(s3, tiny_model: Path, synthetic_root: Path) -> dict[str, str]:
    fs = s3.fs()
    if not fs.exists(f"{s3.bucket}/faults/model"):
        s3.upload(synthetic_root, "faults/data")
        s3.upload(tiny_model, "faults/model")
    return {"model": f"s3://{s3.bucket}/faults/model", "data": f"s3://{s3.bucket}/faults/data",
            "out": f"s3://{s3.bucket}/faults/scores"}


def _job(tmp: Path, world: dict[str, str], endpoint: str, **so: Any) -> Path:
    options = {"key": "test", "secret": "test-secret", "client_kwargs": {"endpoint_url": endpoint}, **so}
    job = tmp / f"job-{len(list(tmp.glob('job-*')))}.yaml"
    job.write_text(yaml.safe_dump({**world, "batch_size": 2, "num_actors": 1, "storage_options": options}))
    return job


def _score(job: Path, run_id: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["score", "--config", str(job), "--run-id", run_id])
    return code, capsys.readouterr().err


def _scores(s3, world: dict[str, str], run_id: str) -> dict[str, float]:
    """Score per image id of a committed run; an image committed twice fails here, not in a dict."""
    rows = read_results(RunPaths(world["out"], run_id), s3.storage_options).to_pylist()
    ids = [r["image_id"] for r in rows]
    assert len(ids) == len(set(ids)), f"rows committed twice: {sorted(i for i in set(ids) if ids.count(i) > 1)}"
    return {r["image_id"]: r["score"] for r in rows}


def _after_first_part(s3, world: dict[str, str], run_id: str, fault: Any) -> tuple[threading.Thread, threading.Event]:
    """Run ``fault()`` (in a thread) once the run has staged its first part (watched past the proxy); the event
    says that it fired."""
    staging = f"{world['out'].removeprefix('s3://')}/{run_id}/_staging"
    fired = threading.Event()

    def watch() -> None:
        fs = s3.fs()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            fs.invalidate_cache()
            if fs.exists(staging) and any("part-" in p for p in fs.ls(staging)):
                fired.set()
                fault()
                return
            time.sleep(0.2)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t, fired


@pytest.fixture
def reference(s3, ray_local, world: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
              ) -> dict[str, float]:
    code, err = _score(_job(tmp_path, world, s3.endpoint), "reference", capsys)
    assert code == 0, err
    return _scores(s3, world, "reference")


@pytest.mark.parametrize("mode", ["down", "503"])
def test_a_short_outage_or_throttling_is_absorbed(mode: str, s3, proxy: FaultyS3, world: dict[str, str],
                                                  reference: dict[str, float], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    after_fault: list[int] = []

    def fault() -> None:
        with proxy.fault(mode):
            time.sleep(18)  # past the ≈ 15 s that failed the whole run before retries were configured
        after_fault.append(proxy.requests)

    watcher, fired = _after_first_part(s3, world, f"absorbed-{mode}", fault)
    code, err = _score(_job(tmp_path, world, proxy.endpoint), f"absorbed-{mode}", capsys)
    watcher.join(timeout=60)
    assert code == 0, err[-3000:]
    assert fired.is_set() and after_fault, "the fault never fired: the run finished before its first part was seen"
    assert proxy.requests > after_fault[0], "nothing reached the store after the fault: it did not span the run"
    assert mode != "503" or proxy.refused > 0
    assert _scores(s3, world, f"absorbed-{mode}") == pytest.approx(reference, rel=1e-5, abs=1e-6)


def test_an_outage_past_the_retry_budget_fails_in_one_line_and_the_same_command_resumes(
        s3, proxy: FaultyS3, world: dict[str, str], reference: dict[str, float], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    budget = {"config_kwargs": {"retries": {"mode": "standard", "max_attempts": 2}, "connect_timeout": 2}}
    job = _job(tmp_path, world, proxy.endpoint, **budget)
    watcher, fired = _after_first_part(s3, world, "outage", proxy.down)
    code, err = _score(job, "outage", capsys)
    watcher.join(timeout=60)
    assert fired.is_set()
    last = err.strip().splitlines()[-1]
    assert code == 3 and last.startswith("mdps: error: storage unavailable after retries:"), err[-3000:]
    assert "rerun the same command to resume" in last
    proxy.up()
    code, err = _score(job, "outage", capsys)  # the same command, the first time
    assert code == 0, err[-3000:]
    # other batch-mates: float noise (1.3e-6 on an AVX2-only CPU)
    assert _scores(s3, world, "outage") == pytest.approx(reference, rel=1e-5, abs=1e-6)
