"""Perceptual backbones for the feature term of the difference map.

Every backbone maps images in [−1, 1] to a list of feature maps once (so the observation's
features are computed once and reused for all its posterior samples), and turns two such lists
into a (B, 1, H, W) distance map. Weights come in as a state dict: nothing here downloads.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Protocol

import lpips
import torch
import torchvision
from torch import nn

from mdps_ray.core.maps import feature_cosine_distance, imagenet_normalize

LPIPS_NETS = {"lpips-alex": "alex", "lpips-vgg": "vgg", "lpips-squeeze": "squeeze"}
LPIPS_MIN_SIZE = 64


class Backbone(Protocol):
    """What the scorer needs of a perceptual backbone."""

    name: str

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of images x in [−1, 1], (B, 3, H, W)."""
        ...

    def distance(self, feats_x: list[torch.Tensor], feats_y: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Distance map (B, 1, *size) between two feature lists."""
        ...


class LpipsBackbone(nn.Module):
    """LPIPS v0.1 (Zhang et al. 2018) as a spatial map, built on the ``lpips`` package.

    d(x, y) = Σ_l up( w_l · (n(φ_l(x)) − n(φ_l(y)))² ), n = unit-normalise over channels.
    """

    def __init__(self, net: str, state_dict: Mapping[str, torch.Tensor] | None) -> None:
        super().__init__()
        self.name = f"lpips-{net}"
        with warnings.catch_warnings():  # torchvision's deprecated `pretrained=` inside lpips
            warnings.simplefilter("ignore", UserWarning)
            self.lpips = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, spatial=True, lpips=True, verbose=False)
        if state_dict is None:
            _reinit(self.lpips)
        else:
            _load_checked(self.lpips, state_dict, self.name)
        self.eval().requires_grad_(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if min(x.shape[-2:]) < LPIPS_MIN_SIZE:  # AlexNet's strides leave nothing of smaller inputs
            x = nn.functional.interpolate(
                x, size=(LPIPS_MIN_SIZE, LPIPS_MIN_SIZE), mode="bilinear", align_corners=False
            )
        outs = self.lpips.net(self.lpips.scaling_layer(x))
        return [lpips.normalize_tensor(o) for o in outs]

    def distance(self, feats_x: list[torch.Tensor], feats_y: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        total = torch.zeros(())
        for lin, a, b in zip(self.lpips.lins, feats_x, feats_y, strict=True):
            d = lin((a - b) ** 2)
            total = total + nn.functional.interpolate(d, size=size, mode="bilinear", align_corners=False)
        return total


class WideResNetBackbone(nn.Module):
    """The official code's feature term: Wide-ResNet-101-2 layer2 + layer3, 1 − cosine."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor] | None) -> None:
        super().__init__()
        self.name = "wide_resnet101_2"
        self.net = torchvision.models.wide_resnet101_2(weights=None)
        if state_dict is None:
            _reinit(self.net)
        else:
            _load_checked(self.net, state_dict, self.name)
        self.eval().requires_grad_(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        n = self.net
        h = n.maxpool(n.relu(n.bn1(n.conv1(imagenet_normalize(x)))))
        l2 = n.layer2(n.layer1(h))
        return [l2, n.layer3(l2)]

    def distance(self, feats_x: list[torch.Tensor], feats_y: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        return feature_cosine_distance(feats_x, feats_y, size)


def _reinit(module: nn.Module, seed: int = 0) -> None:
    """Deterministic random weights (the explicit ``random`` backbone, for tiny tests)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if p.ndim > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
        for p in module.parameters():
            if p.ndim == 4 and p.shape[0] == 1:  # LPIPS linear heads are non-negative
                p.abs_()


def _load_checked(module: nn.Module, state_dict: Mapping[str, torch.Tensor], name: str) -> None:
    """Load weights; every parameter of the module must be given (LPIPS' ``lins.*`` aliases aside)."""
    result = module.load_state_dict(dict(state_dict), strict=False)
    skip = ("lins.", "scaling_layer.")
    missing = [k for k in result.missing_keys if not k.startswith(skip) and "num_batches" not in k]
    if missing:
        raise ValueError(
            f"expected weights for every parameter of {name}, but {len(missing)} are missing "
            f"(e.g. {missing[:3]}); point maps.backbone_weights at a {name} weight file"
        )


def build_backbone(name: str, state_dict: Mapping[str, torch.Tensor] | None) -> Backbone | None:
    """A backbone by config name; ``state_dict=None`` is only allowed for ``random``."""
    if name == "none":
        return None
    if name == "random":
        return LpipsBackbone("alex", None)
    if state_dict is None:
        raise ValueError(f"expected weights for backbone {name!r}, got none (use 'random' for tests)")
    if name in LPIPS_NETS:
        return LpipsBackbone(LPIPS_NETS[name], state_dict)
    if name == "wide_resnet101_2":
        return WideResNetBackbone(state_dict)
    raise ValueError(f"expected a backbone in {[*LPIPS_NETS, 'wide_resnet101_2', 'random', 'none']}, got {name!r}")
