"""Calibration on a CUDA device: the path that crashed at its end (lstsq with a driver CUDA lacks)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.gpu_calibrate import main as calibrate_on
from mdps_ray.core import maps
from mdps_ray.core.masking import quantile_threshold

pytestmark = pytest.mark.gpu


def test_the_default_calibrates_on_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    assert calibrate_on(["--device", "cuda", "--images", "16"]) == 0
    assert capsys.readouterr().out.strip().endswith("level_features=ordinary ok")


def test_the_level_model_fits_from_cuda_tensors_and_quantiles_take_more_than_2_24_values() -> None:
    phi = torch.tensor([[1.0, -2.0, 0.1], [1.0, -1.0, 0.0], [1.0, -3.0, -0.2], [1.0, -1.5, 0.3]], device="cuda")
    model = maps.fit_level_model(phi, torch.tensor([0.1, 0.2, 0.05, 0.15], device="cuda"))
    assert model.features == "ordinary" and maps.expected_level(phi, model).device.type == "cuda"
    assert quantile_threshold(torch.rand(2**24 + 1, device="cuda"), 0.5) == pytest.approx(0.5, abs=1e-2)
