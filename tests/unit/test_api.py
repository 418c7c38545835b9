"""The Python API gives maps on the input's pixel grid, and the prior's grid beside them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mdps_ray.api import Detector
from mdps_ray.core.maps import to_input_grid


def test_maps_come_back_at_each_input_size(tiny_model: Path, tmp_path: Path) -> None:
    det = Detector.load(str(tiny_model))
    side = det.config.prior.image_size
    rng = np.random.default_rng(0)
    paths = []
    for name, (w, h) in {"wide.png": (48, 40), "small.png": (20, 20)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    result = det.score(paths)
    assert [tuple(m.shape) for m in result.anomaly_maps] == [(1, 40, 48), (1, 20, 20)]
    assert tuple(result.prior.anomaly_map.shape) == (2, 1, side, side)
    up = F.interpolate(result.prior.anomaly_map[:1], size=(40, 48), mode="bilinear", align_corners=False)
    assert torch.allclose(result.anomaly_maps[0], up[0])
    with pytest.raises(ValueError, match=r"use \.anomaly_maps"):
        _ = result.anomaly_map
    assert det.is_anomalous(result).shape == (2,)

    tensor = torch.rand((2, 3, 24, 24), generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert tuple(det.score(tensor).anomaly_map.shape) == (2, 1, 24, 24)
    at_prior = det.score(tensor[:, :, :side, :side])
    assert torch.equal(at_prior.anomaly_map, at_prior.prior.anomaly_map)  # no resampling at the prior's size


def test_a_cropped_map_covers_the_same_centre_fraction_of_the_input() -> None:
    amap = torch.rand((1, 1, 12, 12))
    assert tuple(to_input_grid(amap, (64, 128), 16).shape) == (1, 1, 48, 96)
    assert tuple(to_input_grid(amap, (12, 12), 12).shape) == (1, 1, 12, 12)
