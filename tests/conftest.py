"""Shared fixtures: tiny priors, a procedural MVTec-layout dataset, paths to real data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mdps_ray.config import MapConfig, MaskConfig, PriorConfig, SamplerConfig, ScoreConfig, StageConfig
from mdps_ray.io.synthetic import make_dataset
from mdps_ray.io.weights import weights_dir
from mdps_ray.models.backbones import build_backbone
from mdps_ray.models.prior import build_unet, unet_denoiser
from mdps_ray.scorer import AnomalyScorer

torch.set_num_threads(2)

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
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


@pytest.fixture(scope="session")
def tiny_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_unet(TINY_PRIOR).eval().requires_grad_(False)


def tiny_sampler(**kw: object) -> SamplerConfig:
    base = dict(
        stage1=StageConfig(start_step=60, stride=20, rho=2.0, n_samples=2),
        stage2=StageConfig(start_step=60, stride=20, rho=2.0, n_samples=2),
        mask=MaskConfig(mode="calibrated", threshold=0.05),
    )
    base.update(kw)
    return SamplerConfig(**base)  # type: ignore[arg-type]


def make_scorer(
    unet: torch.nn.Module,
    sampler: SamplerConfig | None = None,
    maps: MapConfig | None = None,
    score: ScoreConfig | None = None,
) -> AnomalyScorer:
    maps = maps or MapConfig(backbone="random", blur_sigma=1.0)
    return AnomalyScorer(
        unet_denoiser(unet),
        TINY_PRIOR,
        sampler or tiny_sampler(),
        maps,
        score or ScoreConfig(),
        build_backbone(maps.backbone, None),
    )


@pytest.fixture
def images16() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand((4, 3, 16, 16), generator=g) * 2 - 1


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), size=32, n_train=24, n_test_good=4, n_test_defect=2)


@pytest.fixture
def bottle_root() -> Path:
    root = SHARED_DATASETS / "mvtec_bottle"
    if not root.is_dir():
        pytest.skip(f"real data absent: {root} not found (../shared/datasets is provided beside the checkout)")
    return root

pytest_plugins = ["tests.fixtures_infra"]
