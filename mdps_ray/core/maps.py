"""Difference maps between an observation y and its posterior samples x̂ (docs/method.md §3).

    i_d = mean_c | N(x̂) − N(y) |                         pixel term, N = ImageNet normalisation
    f_d = Σ_layers up(1 − cos(agg(φ_l(x̂)), agg(φ_l(y))))  feature term (Wide-ResNet form)
    A   = scale · blur_σ( f_d + w · (max f_d / max i_d) · i_d )

All maps are (B, 1, H, W). The maxima are per image by default (``weighting="per_image"``);
``"batch"`` takes them over the batch as the official code does: over the B images of each of
the n sample repeats (rows image-major, row i·n + j = sample j of image i).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Weighting = Literal["per_image", "batch"]


@functools.lru_cache(maxsize=16)
def _imagenet_stats(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The (1, 3, 1, 1) mean and std, uploaded once per (dtype, device) rather than at every call."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=dtype).view(1, 3, 1, 1).to(device)
    std = torch.tensor(IMAGENET_STD, dtype=dtype).view(1, 3, 1, 1).to(device)
    return mean, std


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """[−1, 1] RGB (B, 3, H, W) → [0, 1] → ImageNet mean/std normalised."""
    mean, std = _imagenet_stats(x.dtype, x.device)
    return ((x + 1.0) / 2.0 - mean) / std


def pixel_distance(x_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """i_d = mean over channels of |N(x̂) − N(y)|; (B, 3, H, W) ×2 → (B, 1, H, W)."""
    return (imagenet_normalize(x_hat) - imagenet_normalize(y)).abs().mean(dim=1, keepdim=True)


def feature_cosine_distance(
    feats_x: Sequence[torch.Tensor], feats_y: Sequence[torch.Tensor], size: tuple[int, int]
) -> torch.Tensor:
    """f_d = Σ_l up(1 − cos(agg(a_l), agg(b_l))) over layers; each a_l, b_l is (B, C_l, h_l, w_l).

    agg is 3×3 mean aggregation, stride 1, zero padding counted (PatchCore-style); cosine over
    channels; bilinear upsampling with align_corners=True to ``size``. Returns (B, 1, *size).
    """
    total: torch.Tensor | None = None
    for a, b in zip(feats_x, feats_y, strict=True):
        a = F.avg_pool2d(a, 3, 1, 1, count_include_pad=True)
        b = F.avg_pool2d(b, 3, 1, 1, count_include_pad=True)
        d = 1.0 - F.cosine_similarity(a, b, dim=1).unsqueeze(1)
        d = F.interpolate(d, size=size, mode="bilinear", align_corners=True)
        total = d if total is None else total + d
    if total is None:
        raise ValueError("expected at least one feature layer, got none")
    return total


def _max_per(x: torch.Tensor, weighting: Weighting, n_samples: int = 1) -> torch.Tensor:
    if weighting == "per_image":
        return x.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    if weighting == "batch":
        per_repeat = x.reshape(-1, n_samples, x[0].numel()).amax(dim=(0, 2))  # (n,)
        return per_repeat.repeat(x.shape[0] // n_samples).view(-1, 1, 1, 1)
    raise ValueError(f"expected weighting 'per_image' or 'batch', got {weighting!r}")


def combine(
    feature_map: torch.Tensor, pixel_map: torch.Tensor, pixel_weight: float, weighting: Weighting,
    n_samples: int = 1,
) -> torch.Tensor:
    """f_d + w · (max f_d / max i_d) · i_d, the pixel term rescaled to the feature term's peak."""
    if pixel_weight == 0.0:
        return feature_map
    ratio = _max_per(feature_map, weighting, n_samples) / _max_per(pixel_map, weighting, n_samples).clamp_min(1e-12)
    return feature_map + pixel_weight * ratio * pixel_map


def fuse_stages(stage2_map: torch.Tensor, stage1_map: torch.Tensor, weight: float) -> torch.Tensor:
    """A = A₂ + w · A₁, the final map of the two-stage method; (B, 1, H, W) each.

    With the paper's noise-mixing sampler A₂ is zero where m = 0 (x̂0 = y there; only the blur
    spills over the mask's edge), so the unmasked pixels tie at zero. A small w lets the stage-1
    evidence order those pixels while A₂ still dominates inside the mask; w = 0 is the paper's.
    """
    if weight < 0:
        raise ValueError(f"expected a stage-1 weight >= 0, got {weight}")
    if stage1_map.shape != stage2_map.shape:
        shapes = f"{tuple(stage2_map.shape)} and {tuple(stage1_map.shape)}"
        raise ValueError(f"expected stage-1 and stage-2 maps of equal shape, got {shapes}")
    return stage2_map if weight == 0 else stage2_map + weight * stage1_map


MIN_IMAGE_LEVEL = 1e-6  # a map that is zero almost everywhere (a perfect reconstruction) is floored at this


def image_level(stage1_map: torch.Tensor) -> torch.Tensor:
    """σᵢ = median_p A₁(i, p), the typical stage-1 difference of each image; (B, 1, H, W) → (B,).

    What the prior's reconstruction error is on this image where nothing is wrong: it grows with the
    image's contrast and with how far its acquisition (illumination) is from what the prior reconstructs
    well, but also with a defect that spreads over the image. Floored at ``MIN_IMAGE_LEVEL``.
    """
    return stage1_map.flatten(1).median(dim=1).values.clamp_min(MIN_IMAGE_LEVEL)


LevelFeatures = Literal["ordinary", "observation"]


@dataclass(frozen=True)
class LevelModel:
    """σ̂(y) = clamp(exp(φ(y)·β), σ_min, σ_max): the stage-1 level a normal image of y's acquisition has.

    Attributes:
        beta: (β₀, β₁, β₂), the weights of φ(y) = [1, log spread, centre].
        lo, hi: σ_min and σ_max, the smallest and largest σᵢ it was fitted on.
        features: how φ is measured (:func:`acquisition_features`): ``"ordinary"`` (median and median
            absolute deviation of the pixels the image's own first map finds ordinary; a defect cannot move
            them) or ``"observation"`` (mean and mean absolute deviation of every pixel: calibrations made
            before ``ordinary`` existed, kept so that they score as they were fitted).
    """

    beta: tuple[float, float, float]
    lo: float
    hi: float
    features: LevelFeatures = "ordinary"


def acquisition_features(y: torch.Tensor, first_map: torch.Tensor | None = None,
                         reconstruction: torch.Tensor | None = None,
                         features: LevelFeatures = "ordinary") -> torch.Tensor:
    """φ(y) = [1, log spread, centre] of each observation, (B, 3, H, W) in [−1, 1] → (B, 3), float64.

    ``"ordinary"``: centre = the median and spread = the median absolute deviation from it (over pixels and
    channels) of z = y where the first map A (``first_map``, (B, 1, H, W): the stage-1 map, or the single
    stage's) is at most its median, and the posterior mean x̂ (``reconstruction``, (B, 3, H, W)) of that pass
    elsewhere: the image with its least ordinary half replaced by what the prior finds normal there. A defect
    raises A where it is, so z holds x̂ there, not the defect, and the defect's size and contrast cannot move
    the level that divides its own map (a mean absolute deviation over every pixel grew with a large bright
    defect and hid it behind itself). Without ``reconstruction`` that half is left out; without ``first_map``
    every pixel of y counts.
    ``"observation"``: centre = the mean, spread = the mean absolute deviation from the median, every pixel of y
    (calibrations made before ``ordinary``).
    """
    flat = y.detach().flatten(1).double()
    if features == "observation":
        mad = (flat - flat.median(dim=1, keepdim=True).values).abs().mean(dim=1).clamp_min(MIN_IMAGE_LEVEL)
        return torch.stack([torch.ones_like(mad), mad.log(), flat.mean(dim=1)], dim=1)
    if features != "ordinary":
        raise ValueError(f"expected level features 'ordinary' or 'observation', got {features!r}")
    if first_map is not None:
        if first_map.shape[0] != y.shape[0] or tuple(first_map.shape[-2:]) != tuple(y.shape[-2:]):
            raise ValueError(f"expected a first map (B, 1, H, W) for images {tuple(y.shape)}, "
                             f"got {tuple(first_map.shape)}")
        a = first_map.detach().flatten(1)
        ordinary = (a <= a.median(dim=1, keepdim=True).values).view(y.shape[0], 1, *y.shape[-2:])
        elsewhere = torch.full_like(y, torch.nan) if reconstruction is None else reconstruction.detach().to(y.dtype)
        flat = torch.where(ordinary.expand_as(y), y.detach(), elsewhere).flatten(1).double()
    centre = flat.nanmedian(dim=1, keepdim=True).values
    mad = (flat - centre).abs().nanmedian(dim=1).values.clamp_min(MIN_IMAGE_LEVEL)
    return torch.stack([torch.ones_like(mad), mad.log(), centre.flatten()], dim=1)


def fit_level_model(features: torch.Tensor, levels: torch.Tensor, kind: LevelFeatures = "ordinary") -> LevelModel:
    """Least squares log σᵢ ≈ φ(yᵢ)·β over normal images: (N, 3), (N,) → the :class:`LevelModel`.

    Solved on the host in float64 (three unknowns: cheap and exact, on any device the maps came from; CUDA's
    lstsq has no rank-revealing driver). σ_min and σ_max are the smallest and largest σᵢ fitted on:
    :func:`expected_level` stays between them, so an image unlike every normal one is not divided by an
    extrapolated level.
    """
    if features.shape[0] != levels.shape[0] or features.shape[0] == 0:
        raise ValueError(f"expected one level per feature row, got {features.shape[0]} rows and {levels.shape[0]}")
    phi = features.detach().double().cpu()
    log_levels = levels.detach().double().cpu().clamp_min(MIN_IMAGE_LEVEL).log().unsqueeze(1)
    beta = torch.linalg.lstsq(phi, log_levels, driver="gelsd").solution.flatten()
    b0, b1, b2 = (float(b) for b in beta)
    return LevelModel((b0, b1, b2), float(levels.min()), float(levels.max()), kind)


def expected_level(features: torch.Tensor, model: LevelModel) -> torch.Tensor:
    """σ̂(y) = clamp(exp(φ(y)·β), σ_min, σ_max): the level a normal image of this acquisition has; (B, 3) → (B,)."""
    coef = torch.tensor(model.beta, dtype=torch.float64, device=features.device)
    lo, hi = max(model.lo, MIN_IMAGE_LEVEL), max(model.hi, MIN_IMAGE_LEVEL)
    return (features.double() @ coef).exp().clamp(min=lo, max=hi)


def relative_to_level(amap: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Ã = A / σ̂ per image: (B, 1, H, W), (B,) → (B, 1, H, W), in amap's dtype.

    A normal image under brighter light or with more contrast, whose every difference is larger,
    is divided by the larger level that normal images of its kind have.
    """
    return amap / level.to(amap.dtype).view(-1, 1, 1, 1)


@functools.lru_cache(maxsize=32)
def gaussian_kernel1d(sigma: float, size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised 1-D Gaussian window of odd length ``size``; built and uploaded once per arguments."""
    if size % 2 != 1 or sigma <= 0:
        raise ValueError(f"expected an odd kernel size and sigma > 0, got size={size}, sigma={sigma}")
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return (w / w.sum()).to(dtype=dtype, device=device)


def gaussian_blur(x: torch.Tensor, sigma: float, size: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur with reflect borders; (B, C, H, W) → same shape.

    ``size`` defaults to 2·⌈4σ⌉ + 1 (33 for σ = 4, the official code's kernel). The kernel is
    clipped to the image when the image is smaller than it.
    """
    size = size or 2 * math.ceil(4 * sigma) + 1
    half = min(size // 2, x.shape[-1] - 1, x.shape[-2] - 1)
    k = gaussian_kernel1d(sigma, 2 * half + 1, x.dtype, x.device)
    c = x.shape[1]
    out = F.pad(x, (half, half, 0, 0), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, half, half), mode="reflect")
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Central size×size window of (…, H, W) (the MVTec 224 crop of the official evaluation)."""
    h, w = x.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"expected crop size <= image size {h}x{w}, got {size}")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def mean_over_samples(maps: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Average the n maps of each image; rows image-major: (B·n, …) → (B, …)."""
    if maps.shape[0] % n_samples:
        raise ValueError(f"expected a multiple of n={n_samples} rows, got {maps.shape[0]}")
    return maps.view(-1, n_samples, *maps.shape[1:]).mean(dim=1)


def to_input_grid(amap: torch.Tensor, input_hw: tuple[int, int], prior_side: int) -> torch.Tensor:
    """A map on the prior's grid back on the input's pixel grid, bilinearly.

    (B, 1, h, w) → (B, 1, H·h/S, W·w/S) for an input of H × W squeezed to the prior's S × S: with
    h = w = S that is (B, 1, H, W); a centre-cropped map (``maps.crop`` = h < S) covers the
    same centre fraction of the input.
    """
    h_in, w_in = input_hw
    out = (max(1, round(h_in * amap.shape[-2] / prior_side)), max(1, round(w_in * amap.shape[-1] / prior_side)))
    if out == tuple(amap.shape[-2:]):
        return amap
    return F.interpolate(amap.float(), size=out, mode="bilinear", align_corners=False).to(amap.dtype)
