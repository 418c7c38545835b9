"""The Wide-ResNet-101-2 trunk from the weight files users give: torchvision's .pth and a safetensors copy.

A real 127 M-parameter network, built, saved twice (≈1 GB) and loaded twice: about 13 s, so it runs with the
integration tier rather than in the one-minute unit tier.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from safetensors.torch import save_file

from mdps_ray.models.backbones import build_backbone
from mdps_ray.storage.weights import load_backbone_weights


def test_wide_resnet_loads_torchvision_pth_and_safetensors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = torchvision.models.wide_resnet101_2(weights=None).state_dict()
    torch.save(state, tmp_path / "wrn.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "wrn.safetensors"))
    for name in ("wrn.pth", "wrn.safetensors"):
        loaded, _ = load_backbone_weights("wide_resnet101_2", str(tmp_path / name))
        net = build_backbone("wide_resnet101_2", loaded)
        assert net is not None
        x = torch.rand((1, 3, 64, 64)) * 2 - 1
        with torch.no_grad():
            feats = net.features(x)
            assert [f.shape[1] for f in feats] == [512, 1024]
            assert net.distance(feats, feats, (64, 64)).abs().max() < 1e-5
