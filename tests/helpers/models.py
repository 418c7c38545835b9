"""Test helpers: tiny priors and scorers (8–32 px, a few channels), paths to real data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mdps_ray.config.method import (
    MapConfig,
    MaskConfig,
    MdpsConfig,
    PriorConfig,
    SamplerConfig,
    ScoreConfig,
    StageConfig,
    TilingConfig,
)
from mdps_ray.core.guidance import Denoiser
from mdps_ray.method.calibration import resolve_mask_threshold
from mdps_ray.method.scorer import AnomalyScorer
from mdps_ray.models.backbones import build_backbone
from mdps_ray.models.runtime import unet_denoiser
from mdps_ray.storage.weights import weights_dir

SHARED_DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


LPIPS_INSTALLED = (weights_dir() / "lpips-alex.safetensors").exists()


needs_lpips = pytest.mark.skipif(
    not LPIPS_INSTALLED, reason="LPIPS weights not installed: run `mdps weights install` (make test does)"
)


TINY_PRIOR = PriorConfig(
    image_size=16,
    block_out_channels=(8, 16),
    attention_levels=(False, False),
    norm_num_groups=4,
    attention_head_dim=8,
)


def tiny_sampler(**kw: object) -> SamplerConfig:
    base = dict(
        stage1=StageConfig(start_step=60, stride=20, rho=2.0, n_samples=2),
        stage2=StageConfig(start_step=60, stride=20, rho=2.0, n_samples=2),
        mask=MaskConfig(mode="calibrated", threshold=0.05),
    )
    base.update(kw)
    return SamplerConfig(**base)  # type: ignore[arg-type]


def make_scorer(
    unet: torch.nn.Module | Denoiser,
    sampler: SamplerConfig | None = None,
    maps: MapConfig | None = None,
    score: ScoreConfig | None = None,
    tiling: TilingConfig | None = None,
    tile_stride: int | None = None,
    prior: PriorConfig = TINY_PRIOR,
) -> AnomalyScorer:
    maps = maps or MapConfig(backbone="random", blur_sigma=1.0, stage1_weight=0.0)
    sampler = sampler or tiny_sampler()
    return AnomalyScorer(
        unet_denoiser(unet) if isinstance(unet, torch.nn.Module) else unet,
        prior,
        sampler,
        maps,
        score or ScoreConfig(),
        build_backbone(maps.backbone, None),
        resolve_mask_threshold(sampler.mask, None, None),
        tiling=tiling,
        tile_stride=tile_stride,
    )


# The method config of the integration tier's tiny model (random perceptual trunk, explicit mask threshold).
CONFIG = MdpsConfig(prior=TINY_PRIOR, sampler=tiny_sampler(),
                    maps=MapConfig(backbone="random", blur_sigma=1.0, stage1_weight=0.0))
