"""The real job path: `ray start --head` on loopback, `ray job submit -- python jobs/score.py`, moto S3."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mdps_ray.data.records import list_mvtec
from mdps_ray.storage.results import RESULT_SCHEMA
from tests.helpers.infra import FAKE_SECRET, HeadNode

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def head(tmp_path: Path, s3, monkeypatch: pytest.MonkeyPatch) -> Iterator[HeadNode]:
    # Credentials and endpoint reach the cluster the standard way (environment), never as arguments.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    node = HeadNode(tmp_path)
    yield node
    node.stop()


def test_ray_job_submit_scores_from_s3(head: HeadNode, s3, tiny_model: Path,
                                       synthetic_root: Path) -> None:
    data = s3.upload(synthetic_root, "job/data/synthetic")
    model = s3.upload(tiny_model, "job/models/tiny")
    out = f"s3://{s3.bucket}/job/scores"
    proc = head.submit(["python", "jobs/score.py", "--model", model, "--data", data, "--out", out,
                        "--run-id", "submitted"], REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "s3://mdps-test/job/scores/submitted" in proc.stdout
    fs = s3.fs()
    root = f"{s3.bucket}/job/scores/submitted"
    assert fs.exists(f"{root}/_SUCCESS") and fs.exists(f"{root}/metrics.json")
    tables = [pq.read_table(io.BytesIO(fs.cat_file(p))) for p in fs.find(f"{root}/results")]
    assert sum(t.num_rows for t in tables) == len(list_mvtec(str(synthetic_root), "test"))
    assert all(t.schema.remove_metadata().equals(RESULT_SCHEMA.remove_metadata()) for t in tables)
    assert FAKE_SECRET not in proc.stdout + proc.stderr
    # a relative --out would land in Ray's throw-away copy of the working dir: refused in one line
    rel = head.submit(["python", "jobs/score.py", "--model", model, "--data", data, "--out", "runs/scores"], REPO)
    assert rel.returncode != 0
    wanted = "expected an absolute path or a URI for --out in a submitted job, got 'runs/scores'"
    assert wanted in rel.stdout + rel.stderr
    logs = [p for p in head.temp_dir.rglob("*") if "/logs/" in str(p) and p.is_file()]
    assert logs  # the job's driver log is among them
    for log in logs:
        if log.stat().st_size < 50_000_000:
            assert FAKE_SECRET.encode() not in log.read_bytes(), log
