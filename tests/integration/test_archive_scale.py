"""The scoring job at archive-like size (N ≈ 2,000) with the zero-cost scorer double: one row per image,
one object per batch per kind, maps that read back equal to what the scorer made, and exactly once
under a killed actor and a killed driver. Real Ray, local disk and moto's S3 server."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from PIL import Image

from mdps_ray.config.jobs import ScoreJobConfig
from mdps_ray.data.images import decode_image
from mdps_ray.orchestration.faults import ENV
from mdps_ray.orchestration.score_pipeline import run_score_job
from mdps_ray.storage.maps import read_map, split_member
from mdps_ray.storage.runs import RunPaths, read_results
from mdps_ray.storage.uris import filesystem, read_bytes
from mdps_ray.testing.scorer_double import double_map

N = 2_000
BATCH = 8
SIZE = 16  # the tiny prior's side


def _png(i: int) -> bytes:
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archive") / "line1"
    root.mkdir()
    for i in range(N):
        (root / f"img_{i:05d}.png").write_bytes(_png(i % 97))  # 97 distinct images under N names
    return root


def _check_run(run_dir: str, so: dict, n: int) -> None:
    out, _, run_id = run_dir.rpartition("/")
    rows = read_results(RunPaths(out, run_id), so)
    ids = rows.column("image_id")
    assert rows.num_rows == n and len(pc.unique(ids)) == n  # exactly one row per image
    objects = {split_member(u)[0] for u in rows.column("map_uri").to_pylist()}
    fs, path = filesystem(f"{run_dir}/maps", so)
    stored = fs.find(path)
    assert len(stored) == len(objects) <= -(-n // BATCH) + 8 and all(p.endswith(".npz") for p in stored)
    assert not fs.exists(filesystem(f"{run_dir}/recons", so)[1])  # no object per image, of any kind
    sample = rows.take(list(range(0, n, n // 25))).to_pylist()
    for row in sample:  # each map read back equals the double's map of the decoded pixels
        y = decode_image(read_bytes(row["uri"], so), SIZE)[None]
        expected = double_map(y)[0, 0].numpy().astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(read_map(row, so), expected)


def test_two_thousand_images_on_local_disk(ray_local, tiny_model: Path, archive: Path, tmp_path: Path) -> None:
    job = ScoreJobConfig(model=str(tiny_model), data=str(archive), out=str(tmp_path / "out"), batch_size=BATCH)
    summary = run_score_job(job, scorer_double=True)
    assert summary.n_images == N and summary.n_errors == 0
    _check_run(summary.run_dir, {}, N)
    record = json.loads(Path(summary.run_dir, "run.json").read_text())
    assert record["scorer"].startswith("zero-cost scorer double")  # never mistaken for a model's scores
    assert [p.name for p in (tmp_path / "out" / "_ledger").iterdir()] == [f"{Path(summary.run_dir).name}.parquet"]


def test_two_thousand_images_on_s3(ray_local, s3, tiny_model: Path, archive: Path) -> None:
    fs = s3.fs()
    fs.pipe({f"{s3.bucket}/scale/line1/{p.name}": p.read_bytes() for p in sorted(archive.iterdir())}, batch_size=64)
    job = ScoreJobConfig(model=str(tiny_model), data=f"s3://{s3.bucket}/scale/line1", out=f"s3://{s3.bucket}/scale/out",
                         batch_size=BATCH, storage_options=s3.storage_options)
    summary = run_score_job(job, scorer_double=True)
    assert summary.n_images == N and summary.n_errors == 0
    _check_run(summary.run_dir, s3.storage_options, N)


def test_a_killed_actor_and_a_killed_driver_still_give_every_image_once(ray_local, tiny_model: Path, archive: Path,
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    base = dict(model=str(tiny_model), data=str(archive), out=str(out), batch_size=BATCH, run_id="r",
                async_uploads=True)  # the uploads of a batch overlap the next one's scoring: the GPU default
    script = ("import sys; from mdps_ray.config.jobs import ScoreJobConfig; "
              "from mdps_ray.orchestration.score_pipeline import run_score_job; "
              f"run_score_job(ScoreJobConfig(**{base!r}), scorer_double=True)")
    env = {**os.environ, ENV: json.dumps({"kill_driver_after_batches": 60}), "RAY_ADDRESS": "",
           "RAY_AUTH_MODE": "disabled"}
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert killed.returncode == -9, killed.stderr[-3000:]
    staged = list((out / "r" / "_staging").glob("part-*.parquet"))
    assert staged and not (out / "r" / "_SUCCESS").exists()  # stopped mid-run, with batches staged
    monkeypatch.setenv(ENV, json.dumps({"kill_actor_after_batches": 40}))
    summary = run_score_job(ScoreJobConfig(**base), scorer_double=True)
    assert (out / "r" / "_fault_actor_killed").exists()
    assert summary.n_images == N and summary.n_scored_now < N  # the resume scored only what was missing
    _check_run(summary.run_dir, {}, N)
