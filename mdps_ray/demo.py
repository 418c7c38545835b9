"""The offline demo: a procedural dataset (or a given MVTec-layout folder), a prior trained on the
fly under a budget, calibration on held-out normals, scoring of the test split, metrics."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mdps_ray.api import build_scorer
from mdps_ray.config import MdpsConfig
from mdps_ray.io.checkpoints import save_calibration, save_prior
from mdps_ray.io.datasets import list_mvtec
from mdps_ray.io.synthetic import make_dataset
from mdps_ray.local import Evaluation, calibrate_local, evaluate_local, split_holdout, train_local


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its outputs, and its metrics."""

    out: Path
    metrics: dict[str, float]
    steps: int


def run_demo(
    config: MdpsConfig,
    out: Path,
    data: Path | None,
    train_seconds: float,
    max_steps: int,
    batch_size: int = 8,
    log: bool = True,
) -> DemoResult:
    """Train → calibrate → score → metrics, in this process, on the CPU."""
    device = torch.device("cpu")
    out.mkdir(parents=True, exist_ok=True)
    root = data or make_dataset(out / "data", size=config.prior.image_size, n_train=48, n_test_good=8, n_test_defect=4)
    train_records, holdout = split_holdout(list_mvtec(str(root), "train"), 0.15)
    start = time.monotonic()
    trainer = train_local(train_records, config, max_steps, train_seconds, device)
    unet = trainer.final_unet()
    digest = save_prior(unet, config, str(out / "model"))
    _say(log, f"trained {trainer.step_count} steps in {time.monotonic() - start:.0f} s (model {digest})")
    scorer, _ = build_scorer(unet, config, device)
    calibration = calibrate_local(scorer, holdout, batch_size, device, config_hash=config.digest(), model_digest=digest)
    save_calibration(calibration, str(out / "model"))
    scorer.mask_threshold = calibration.mask_threshold
    ev = evaluate_local(scorer, list_mvtec(str(root), "test"), batch_size, device)
    _write(ev, calibration.score_threshold, out)
    _say(log, "metrics: " + ", ".join(f"{k}={v:.3f}" for k, v in ev.metrics.items()))
    return DemoResult(out, ev.metrics, trainer.step_count)


def _write(ev: Evaluation, threshold: float, out: Path) -> None:
    rows = {
        "image_id": [r.image_id for r in ev.records],
        "uri": [r.uri for r in ev.records],
        "defect_type": [r.defect_type for r in ev.records],
        "label": [r.label for r in ev.records],
        "score": ev.scores.double().tolist(),
        "is_anomalous": (ev.scores > threshold).tolist(),
        "map_max": ev.maps.flatten(1).amax(1).double().tolist(),
    }
    pq.write_table(pa.table(rows), out / "results.parquet")
    (out / "metrics.json").write_text(json.dumps(ev.metrics, indent=2, sort_keys=True))


def _say(enabled: bool, text: str) -> None:
    if enabled:
        print(text, flush=True)
