"""Shared fixtures: tiny priors, a procedural MVTec-layout dataset, paths to real data."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from mdps_ray.data.records import list_mvtec
from mdps_ray.data.synthetic import make_dataset
from mdps_ray.models.prior import build_unet
from mdps_ray.storage.checkpoints import save_calibration, save_prior
from mdps_ray.workflows import calibrate_local
from tests.helpers.models import CONFIG, SHARED_DATASETS, TINY_PRIOR, make_scorer

torch.set_num_threads(2)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped, with the reason, where torch sees no CUDA device (CI, these machines)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: torch sees none on this machine")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_unet(TINY_PRIOR).eval().requires_grad_(False)


@pytest.fixture
def images16() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand((4, 3, 16, 16), generator=g) * 2 - 1


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), size=32, n_train=24, n_test_good=4, n_test_defect=2)


def _real_category(name: str) -> Path:
    root = SHARED_DATASETS / name
    if not root.is_dir():
        pytest.skip(f"real data absent: {root} not found (../shared/datasets is provided beside the checkout)")
    return root


@pytest.fixture
def bottle_root() -> Path:
    return _real_category("mvtec_bottle")


@pytest.fixture
def kolektorsdd_root() -> Path:
    return _real_category("kolektorsdd")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_unet: torch.nn.Module, synthetic_root: Path) -> Path:
    model = tmp_path_factory.mktemp("model") / "model"
    digest = save_prior(tiny_unet, CONFIG, str(model))  # type: ignore[arg-type]
    holdout = list_mvtec(str(synthetic_root), "train")[:6]
    cal = calibrate_local(make_scorer(tiny_unet), holdout, 8, torch.device("cpu"), model_digest=digest)
    save_calibration(cal, str(model))
    return model


@pytest.fixture(scope="session")
def candidate_model(tmp_path_factory: pytest.TempPathFactory, tiny_unet: torch.nn.Module,
                    synthetic_root: Path) -> Path:
    """A second prior for comparisons and promotion: the tiny one perturbed (another digest), calibrated on the
    same normals as :func:`tiny_model`."""
    unet = copy.deepcopy(tiny_unet)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    model = tmp_path_factory.mktemp("candidate") / "model"
    digest = save_prior(unet, CONFIG, str(model))  # type: ignore[arg-type]
    holdout = list_mvtec(str(synthetic_root), "train")[:6]
    save_calibration(calibrate_local(make_scorer(unet), holdout, 8, torch.device("cpu"), model_digest=digest),
                     str(model))
    return model



pytest_plugins = ["tests.helpers.infra"]
