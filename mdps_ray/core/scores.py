"""Image-level anomaly scores from an anomaly map (B, 1, H, W) → (B,)."""

from __future__ import annotations

import math
from typing import Literal

import torch

ScoreMethod = Literal["softmax_topk", "max", "mean_topk"]


def softmax_topk(anomaly_map: torch.Tensor, k: int) -> torch.Tensor:
    """s = Σ_{top-k p} e^{A_p} / Σ_q e^{A_q}, the official code's score (docs/method.md §4).

    Shift-invariant: it measures how peaked the map is, not its level. A flat map gives k/(H·W).
    """
    flat = anomaly_map.flatten(1).double()  # fp32 sums over ~5·10⁴ pixels drift by ~10⁻⁵
    k = min(k, flat.shape[1])
    return torch.softmax(flat, dim=1).topk(k, dim=1).values.sum(dim=1).to(anomaly_map.dtype)


def max_score(anomaly_map: torch.Tensor) -> torch.Tensor:
    """s = max_p A_p."""
    return anomaly_map.flatten(1).amax(dim=1)


def mean_topk(anomaly_map: torch.Tensor, fraction: float) -> torch.Tensor:
    """s = mean of the top ⌈fraction · H·W⌉ pixel values."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"expected 0 < fraction <= 1, got {fraction}")
    flat = anomaly_map.flatten(1)
    k = max(1, math.ceil(fraction * flat.shape[1]))
    return flat.topk(k, dim=1).values.mean(dim=1)


def image_score(anomaly_map: torch.Tensor, method: ScoreMethod, k: int, fraction: float) -> torch.Tensor:
    """Dispatch to one of the scores above."""
    if method == "softmax_topk":
        return softmax_topk(anomaly_map, k)
    if method == "max":
        return max_score(anomaly_map)
    if method == "mean_topk":
        return mean_topk(anomaly_map, fraction)
    raise ValueError(f"expected score method softmax_topk, max or mean_topk, got {method!r}")


SUMMARY_QUANTILES = (0.5, 0.9, 0.99)


def score_summary(scores: torch.Tensor) -> dict[str, float]:
    """The one summary of a set of image scores (N,): n, mean, sample std, q50, q90, q99.

    Calibration stores it for normal images, ``run.json`` and ``metrics.json`` for scored ones, and
    the nightly drift compares them key by key. Empty input gives ``{"n": 0}``.
    """
    s = scores.detach().double().flatten().cpu()
    if not s.numel():
        return {"n": 0.0}
    qs = {f"q{round(q * 100)}": float(torch.quantile(s, q)) for q in SUMMARY_QUANTILES}
    return {"n": float(s.numel()), "mean": float(s.mean()), "std": float(s.std()) if s.numel() > 1 else 0.0, **qs}
