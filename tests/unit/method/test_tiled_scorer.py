"""Scoring by tiles: per-image independence, no mixing of tiles across images, and what resolution buys."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mdps_ray.config.method import MapConfig, MaskConfig, PriorConfig, ScoreConfig, StageConfig, TilingConfig
from mdps_ray.models.prior import alpha_bars
from tests.helpers.models import make_scorer, tiny_sampler

TILED = TilingConfig(enabled=True, read_size=32)
IDS = ["c/test/good/000", "c/test/crack/001", "c/test/good/002"]


def tiled(tiny_unet: torch.nn.Module, stride: int = 8, **maps: object):
    sampler = tiny_sampler(mask=MaskConfig(mode="calibrated", threshold=0.05))
    cfg = MapConfig(**{"backbone": "random", "blur_sigma": 1.0, "stage1_weight": 0.1, **maps})  # type: ignore[arg-type]
    return make_scorer(tiny_unet, sampler, cfg, tiling=TILED, tile_stride=stride)


def test_a_tiled_scorer_is_batch_invariant_and_maps_at_the_read_size(tiny_unet: torch.nn.Module) -> None:
    scorer = tiled(tiny_unet)
    y = torch.rand((3, 3, 32, 32), generator=torch.Generator().manual_seed(0)) * 2 - 1
    batch = scorer.score(y, IDS)
    assert batch.anomaly_map.shape == (3, 1, 32, 32) and batch.reconstruction.shape == (3, 3, 32, 32)
    assert batch.stage1_map is not None and batch.stage1_map.shape == (3, 1, 32, 32)
    for i in range(3):
        alone = scorer.score(y[i : i + 1], IDS[i : i + 1])
        assert torch.allclose(batch.score[i], alone.score[0], atol=1e-5)
        assert torch.allclose(batch.anomaly_map[i], alone.anomaly_map[0], atol=1e-5)


def test_tiles_of_one_image_never_mix_with_another_s(tiny_unet: torch.nn.Module) -> None:
    scorer = tiled(tiny_unet)
    g = torch.Generator().manual_seed(1)
    y = torch.rand((2, 3, 32, 32), generator=g) * 2 - 1
    other = y.clone()
    other[1] = torch.rand((3, 32, 32), generator=g) * 2 - 1  # only the second image changes
    a, b = scorer.score(y, IDS[:2]), scorer.score(other, IDS[:2])
    assert torch.equal(a.anomaly_map[0], b.anomaly_map[0]) and not torch.equal(a.anomaly_map[1], b.anomaly_map[1])


def test_a_tiled_scorer_refuses_images_not_at_the_read_size(tiny_unet: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, 32, 32\)"):
        tiled(tiny_unet).score(torch.zeros((1, 3, 16, 16)), IDS[:1])


LEVEL = 0.0  # the normal image: a flat grey surface with a fine texture


def flat_prior_denoiser(prior: PriorConfig):
    """The exact denoiser of a prior concentrated on the flat image x0 = LEVEL: ε = (x_t − √ᾱ_t·LEVEL)/√(1 − ᾱ_t).

    A perfectly trained prior of the normal surface, so that the only thing under test is the resolution.
    """
    ab = alpha_bars(prior)

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = ab[t].to(x_t.dtype).view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * LEVEL) / (1 - a).sqrt()

    return denoise


def test_a_4px_defect_in_a_1024px_image_is_found_by_tiles_and_lost_when_squeezed_to_64px() -> None:
    side, tile, defect = 1024, 64, slice(500, 504)
    g = torch.Generator().manual_seed(3)
    fine = 0.05 * torch.randn((1, 1, side, side), generator=g)  # grain, and shading that varies slowly:
    coarse = F.interpolate(0.05 * torch.randn((1, 1, 16, 16), generator=g), size=(side, side), mode="bicubic")
    y = (LEVEL + fine + coarse).expand(1, 3, side, side).clone()
    y[..., defect, defect] = 0.9  # a 4 × 4 px bright flaw
    prior = PriorConfig(image_size=tile, block_out_channels=(8, 16), attention_levels=(False, False),
                        norm_num_groups=4, attention_head_dim=8)
    stage = StageConfig(start_step=40, stride=20, rho=1.0, n_samples=1)
    sampler = tiny_sampler(stage1=stage, stage2=stage, mask=MaskConfig(mode="none"))
    maps = MapConfig(backbone="none", blur_sigma=1.0, stage1_weight=0.0)
    score = ScoreConfig(method="max")
    by_tiles = make_scorer(flat_prior_denoiser(prior), sampler, maps, score, prior=prior, tile_stride=tile,
                           tiling=TilingConfig(enabled=True, read_size=side))
    squeezed = make_scorer(flat_prior_denoiser(prior), sampler, maps, score, prior=prior)

    tiled_map = by_tiles.score(y, ["flaw"]).anomaly_map[0, 0]
    small = F.interpolate(y, size=(tile, tile), mode="bilinear", antialias=True, align_corners=False)
    squeezed_map = F.interpolate(squeezed.score(small, ["flaw"]).anomaly_map, size=(side, side), mode="bilinear",
                                 align_corners=False)[0, 0]

    def contrast(m: torch.Tensor) -> float:
        """The map inside the flaw over the 99.9th percentile of the map elsewhere."""
        inside = torch.zeros_like(m, dtype=torch.bool)
        inside[defect, defect] = True
        return float(m[inside].mean() / torch.quantile(m[~inside][::7], 0.999))

    def peak_distance(m: torch.Tensor) -> float:
        return math.dist(divmod(int(m.argmax()), side), (501.5, 501.5))

    assert peak_distance(tiled_map) < 4 and contrast(tiled_map) > 2.5  # found: far above the texture's tail
    assert peak_distance(squeezed_map) > 64 and contrast(squeezed_map) < 1.0  # lost in the surface's shading
