"""The reverse loop and the maps move nothing small from host to device per step (issue 18, finding 6).

Each small host→device copy (a Python scalar turned into a device tensor) blocks a CUDA stream. The
loop runs here on the ``meta`` device, where every copy from the host is visible: the only uploads
allowed are the keyed noise draws, one (B, C, H, W) tensor each.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mdps_ray.core import maps
from mdps_ray.core.noise import RowNoise
from mdps_ray.core.sampler import ReverseProcess, sample_posterior
from mdps_ray.models.prior import alpha_bars
from tests.helpers.models import TINY_PRIOR

META = torch.device("meta")


class Uploads(TorchDispatchMode):
    """Records the element count of every copy from the host to another device."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and self._upload(args[0], kwargs.get("device")):
            self.sizes.append(args[0].numel())
        return func(*args, **kwargs)

    @staticmethod
    def _upload(source: torch.Tensor, target: object) -> bool:
        return target is not None and torch.device(target).type != "cpu" and source.device.type == "cpu"  # type: ignore[arg-type]


@pytest.fixture
def no_scalar_tensors(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Counts device tensors built straight from Python numbers (a copy the dispatcher does not show)."""
    made: list[str] = []
    for name in ("tensor", "as_tensor", "scalar_tensor"):
        original = getattr(torch, name)

        def counting(*args, _original=original, _name=name, **kwargs):
            device = kwargs.get("device")
            if device is not None and torch.device(device).type != "cpu":
                made.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch, name, counting)
    yield made


def conv_denoiser() -> tuple[torch.nn.Module, object]:
    net = torch.nn.Conv2d(3, 3, 3, padding=1).to(META)
    return net, lambda x, t: net(x)


@pytest.mark.parametrize("rho", [0.0, 2.0])
@pytest.mark.parametrize("masked_sampler", ["eps_mix", "replace"])
def test_the_loop_uploads_only_its_noise(no_scalar_tensors: list[str], rho: float, masked_sampler: str) -> None:
    _, denoise = conv_denoiser()
    steps = (100, 80, 60, 40, 20)
    process = ReverseProcess(alpha_bars(TINY_PRIOR), noise_level=100, timesteps=steps, eta=1.0, rho=rho)
    y = torch.empty((2, 3, 8, 8), device=META)
    mask = torch.empty((2, 1, 8, 8), device=META)
    with Uploads() as uploads:
        out = sample_posterior(denoise, y, process, RowNoise([1, 2], META), mask, masked_sampler)  # type: ignore[arg-type]
    assert out.device.type == "meta"
    # z₀, then one z per stochastic step (σ = 0 on the last one): every upload is a whole noise tensor
    assert uploads.sizes == [y.numel()] * len(steps)
    assert no_scalar_tensors == []


def test_maps_upload_their_constants_once(no_scalar_tensors: list[str]) -> None:
    x = torch.empty((2, 3, 16, 16), device=META)
    maps.pixel_distance(x, x)
    maps.gaussian_blur(maps.pixel_distance(x, x), 1.5)  # first calls: the constants go up once
    with Uploads() as uploads:
        for _ in range(3):
            maps.gaussian_blur(maps.pixel_distance(x, x), 1.5)
    assert uploads.sizes == []
    assert no_scalar_tensors == []
