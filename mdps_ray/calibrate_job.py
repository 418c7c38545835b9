"""`mdps calibrate`: recompute a model's calibration.json from normal images."""

from __future__ import annotations

from typing import Any

import torch

from mdps_ray.api import Detector
from mdps_ray.calibration import Calibration
from mdps_ray.io.checkpoints import save_calibration
from mdps_ray.io.manifest import detect_layout, list_records
from mdps_ray.local import calibrate_local, split_holdout


def calibrate_model(model: str, data: str, holdout_fraction: float = 0.1, target_fpr: float = 0.01,
                    overrides: list[str] | None = None, storage_options: dict[str, Any] | None = None) -> Calibration:
    """Fit and write calibration.json; an MVTec root uses the same held-out split as training."""
    det = Detector.load(model, storage_options=storage_options, overrides=overrides or [], check_calibration=False)
    layout = detect_layout(data, storage_options)
    records = [r for r in list_records(data, layout, "train", storage_options) if r.label in (0, None)]
    if layout == "mvtec":
        _, records = split_holdout(records, holdout_fraction)
    cal = calibrate_local(det.scorer, records, 8, torch.device("cpu"), target_fpr=target_fpr,
                          config_hash=det.config.digest(), model_digest=det.model_digest)
    save_calibration(cal, model, storage_options)
    return cal
