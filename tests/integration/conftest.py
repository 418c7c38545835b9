"""Integration fixtures: a tiny calibrated model on disk (session scope)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mdps_ray.data.records import list_mvtec
from mdps_ray.storage.checkpoints import save_calibration, save_prior
from mdps_ray.workflows import calibrate_local
from tests.helpers.models import CONFIG, make_scorer


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_unet: torch.nn.Module, synthetic_root: Path) -> Path:
    model = tmp_path_factory.mktemp("model") / "model"
    digest = save_prior(tiny_unet, CONFIG, str(model))  # type: ignore[arg-type]
    holdout = list_mvtec(str(synthetic_root), "train")[:6]
    cal = calibrate_local(make_scorer(tiny_unet), holdout, 8, torch.device("cpu"), model_digest=digest)
    save_calibration(cal, str(model))
    return model
