"""Acquisition statistics: what they measure on images whose answer is known."""

from __future__ import annotations

import pytest
import torch

from mdps_ray.core.acquisition import ACQUISITION_STATS, acquisition_stats


def _gray(level: float, side: int = 16) -> torch.Tensor:
    return torch.full((1, 3, side, side), 2 * level - 1)


def test_a_flat_image_has_its_gray_level_as_brightness_and_no_contrast_or_edges() -> None:
    stats = acquisition_stats(torch.cat([_gray(0.25), _gray(0.75)]))
    assert stats.shape == (2, len(ACQUISITION_STATS)) and stats.dtype == torch.float64
    assert stats[:, 0].tolist() == pytest.approx([0.25, 0.75])
    assert stats[:, 1].tolist() == pytest.approx([0.0, 0.0]) and stats[:, 2].tolist() == pytest.approx([0.0, 0.0])


def test_brightness_and_gain_move_their_own_statistic_and_blur_lowers_sharpness() -> None:
    gen = torch.Generator().manual_seed(0)
    y = torch.rand((4, 3, 32, 32), generator=gen) * 0.5 - 0.25  # gray levels around 0.5
    base = acquisition_stats(y)
    brighter = acquisition_stats(y + 0.2)
    assert torch.allclose(brighter[:, 0], base[:, 0] + 0.1) and torch.allclose(brighter[:, 1:], base[:, 1:])
    gain = acquisition_stats(2 * y)
    assert torch.allclose(gain[:, 1], 2 * base[:, 1]) and torch.allclose(gain[:, 2], base[:, 2], rtol=0.02)
    blurred = acquisition_stats(torch.nn.functional.avg_pool2d(y, 3, 1, 1, count_include_pad=False))
    assert (blurred[:, 2] < 0.6 * base[:, 2]).all()


def test_each_image_is_measured_alone() -> None:
    y = torch.rand((3, 3, 8, 8), generator=torch.Generator().manual_seed(1)) * 2 - 1
    together = acquisition_stats(y)
    assert torch.allclose(torch.cat([acquisition_stats(y[i:i + 1]) for i in range(3)]), together, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match=r"expected images \(B, C, H, W\)"):
        acquisition_stats(y[0])
