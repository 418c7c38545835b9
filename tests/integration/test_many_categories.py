"""One job over a models root: each image scored by its category's prior, one listing, one commit,
one run.json with per-category counts; an image of a category without a model is an error row naming it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from mdps_ray.config.jobs import ScoreJobConfig
from mdps_ray.models.prior import build_unet
from mdps_ray.orchestration.score_pipeline import run_score_job
from mdps_ray.storage.checkpoints import save_prior
from mdps_ray.storage.promotion import promote
from tests.helpers.models import CONFIG


@pytest.fixture
def world(tmp_path: Path, synthetic_root: Path) -> dict[str, Path]:
    models, data = tmp_path / "models", tmp_path / "archive"
    digests = {}
    for seed, category in enumerate(("bolts", "nuts")):
        torch.manual_seed(seed)
        digests[category] = save_prior(build_unet(CONFIG.prior), CONFIG, str(models / category / "model"))
    for category in ("bolts", "nuts", "washers"):  # washers: no model trained
        shutil.copytree(synthetic_root, data / category)
    return {"models": models, "data": data, "digests": digests, "out": tmp_path / "out"}  # type: ignore[dict-item]


def test_each_image_is_scored_by_its_categorys_prior(ray_local, world: dict, tmp_path: Path) -> None:
    job = ScoreJobConfig(model=str(world["models"]), data=str(world["data"]), out=str(world["out"]), batch_size=4,
                         max_error_fraction=0.5)
    summary = run_score_job(job)
    rows = pq.read_table(Path(summary.run_dir) / "results").to_pylist()
    errors = pq.read_table(Path(summary.run_dir) / "errors").to_pylist()
    assert {r["category"] for r in rows} == {"bolts", "nuts"} and {r["category"] for r in errors} == {"washers"}
    for r in rows:
        assert r["model_digest"] == world["digests"][r["category"]], r["image_id"]
    assert all("no model for category 'washers'" in e["error"] and str(world["models"] / "washers" / "model")
               in e["error"] for e in errors)
    n = len(rows) // 2
    assert n and sum(r["category"] == "bolts" for r in rows) == n and len(errors) == n
    record = json.loads((Path(summary.run_dir) / "run.json").read_text())
    assert record["per_category"]["washers"] == {"rows": n, "errors": n, "model": None}
    assert record["per_category"]["bolts"]["model"] == str(world["models"] / "bolts" / "model")
    assert set(record["models"]) == {"bolts", "nuts"}
    assert set(json.loads((Path(summary.run_dir) / "metrics.json").read_text())["per_category"]) == {"bolts", "nuts"}
    nights = record["night"]  # what `mdps trend` reads: per category, against each category's own calibration
    assert {c: (v["images"], v["errors"]) for c, v in nights.items()} == {"bolts": (n, 0), "nuts": (n, 0),
                                                                          "washers": (0, n)}
    assert all(v["reference"] is None and v["drift"]["drifted"] is None for v in nights.values())  # uncalibrated

    one = run_score_job(job.model_copy(update={"data": str(world["data"] / "nuts"), "out": str(tmp_path / "alone"),
                                               "model": str(world["models"] / "nuts" / "model")}))
    alone = {r["image_id"]: r["score"] for r in pq.read_table(Path(one.run_dir) / "results").to_pylist()}
    together = {r["image_id"]: r["score"] for r in rows if r["category"] == "nuts"}
    assert together == pytest.approx(alone, rel=1e-5, abs=1e-6)  # the same as scoring that category alone

    night = job.model_copy(update={"incremental": True, "date": "2026-12-02", "out": str(tmp_path / "nights")})
    first = run_score_job(night)
    again = night.model_copy(update={"date": "2026-12-03", "max_error_fraction": 1.0})
    assert first.n_images == 3 * n and run_score_job(again).n_images == n  # the next night: washers' rows only

    # promoted models in a root: a pointer-only folder is a category, and each category reads its current version
    promote(str(world["models"] / "bolts" / "model"), str(world["models"] / "washers" / "model"))
    promote(str(world["models"] / "bolts" / "model"), str(world["models"] / "nuts" / "model"))
    after = run_score_job(job.model_copy(update={"out": str(tmp_path / "promoted")}))
    digests = {r["category"]: r["model_digest"] for r in pq.read_table(Path(after.run_dir) / "results").to_pylist()}
    assert digests == dict.fromkeys(("bolts", "nuts", "washers"), world["digests"]["bolts"])
