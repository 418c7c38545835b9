"""Acquisition statistics of input images: what a camera, a lamp or a lens changes, not what a defect does.

For y (B, 3, H, W) in [−1, 1], with g = gray level in [0, 1] (the channel mean of (y + 1) / 2):

    brightness  = mean_p g_p                         a lamp that aged, an exposure that changed
    contrast    = std_p g_p                          a diffuser, a gain setting
    sharpness   = mean_p |∇² g|_p / (contrast + ε)   focus: the mean absolute 3×3 Laplacian, per unit contrast

Each is one number per image, so a night's images form a sample that a two-sample test compares with
the calibration normals' (``metrics/drift.py``). Sharpness is divided by the contrast so that a
brightness or gain change alone does not read as a change of focus.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ACQUISITION_STATS = ("brightness", "contrast", "sharpness")
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
_EPS = 1e-3


def acquisition_stats(y: torch.Tensor) -> torch.Tensor:
    """Per-image (brightness, contrast, sharpness) of y (B, C, H, W) in [−1, 1] → (B, 3) float64 (module docstring)."""
    if y.ndim != 4:
        raise ValueError(f"expected images (B, C, H, W), got shape {tuple(y.shape)}")
    g = ((y.detach().double() + 1.0) / 2.0).mean(dim=1, keepdim=True)  # (B, 1, H, W)
    brightness = g.mean(dim=(1, 2, 3))
    contrast = g.flatten(1).std(dim=1, correction=0)
    kernel = _LAPLACIAN.to(g)[None, None]
    lap = F.conv2d(g, kernel) if min(g.shape[-2:]) >= 3 else torch.zeros_like(g)
    sharpness = lap.abs().mean(dim=(1, 2, 3)) / (contrast + _EPS)
    return torch.stack([brightness, contrast, sharpness], dim=1)
