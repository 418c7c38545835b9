"""The stage-1 → stage-2 mask of MDPS (m = 1 marks suspected-anomalous pixels).

Two ways to get the threshold on the stage-1 map:
- calibrated (default): a high quantile of stage-1 map values of held-out *normal* images,
  fitted once after training and stored next to the checkpoint (inductive, streamable);
- transductive: lo + f · (hi − lo) over every pixel of every scored image, the official code's
  rule, which needs the whole scored set first (reproduction of published numbers only).
"""

from __future__ import annotations

import torch


def binary_mask(stage1_map: torch.Tensor, threshold: float) -> torch.Tensor:
    """m = 1[A₁ > threshold]; (B, 1, H, W) → same shape, float {0, 1}."""
    return (stage1_map > threshold).to(stage1_map.dtype)


def transductive_threshold(lo: float, hi: float, fraction: float) -> float:
    """lo + f · (hi − lo), lo/hi the min/max over all pixels of the scored set."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"expected 0 <= fraction <= 1, got {fraction}")
    return lo + fraction * (hi - lo)


def quantile_threshold(values: torch.Tensor, q: float) -> float:
    """The q-quantile of a sample of normal map values (any shape); q in (0, 1)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"expected 0 < q < 1, got {q}")
    flat = values.detach().flatten().double()
    if flat.numel() == 0:
        raise ValueError("expected normal map values to fit a threshold, got none")
    return float(torch.quantile(flat, q)) if flat.numel() <= 2**24 else _large_quantile(flat, q)


def _large_quantile(flat: torch.Tensor, q: float) -> float:
    """torch.quantile refuses more than 2^24 elements; sort-based quantile for larger samples."""
    ordered = flat.sort().values
    pos = q * (ordered.numel() - 1)
    lo, frac = int(pos), pos - int(pos)
    hi = min(lo + 1, ordered.numel() - 1)
    return float(ordered[lo] * (1 - frac) + ordered[hi] * frac)
