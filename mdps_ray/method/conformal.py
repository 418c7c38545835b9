"""Conformal image thresholds from normal scores: the order statistic that certifies a false-alarm rate, and the
hash-chosen folds that cross-fit them.

    k = ⌈(n + 1)(1 − α)⌉,   threshold = s₍ₖ₎ (the k-th smallest of n normal scores)

For a normal image exchangeable with the n, P(s > s₍ₖ₎) ≤ 1 − k/(n + 1) ≤ α (Vovk et al.; Angelopoulos & Bates,
"A Gentle Introduction to Conformal Prediction", §1). With n < ⌈1/α⌉ − 1 no order statistic certifies α.
That rate holds on average over which normals were held out; the rate of one threshold is itself random,
Beta(n + 1 − k, k)-distributed for continuous scores (ibid., §3.2), so :func:`fpr_bound` gives the rate a
threshold stays under with a stated confidence.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
from scipy import stats

FOLDS = 5  # cross-fitting folds of the held-out normals (fewer images: one fold each)


def conformal_threshold(scores: torch.Tensor, alpha: float) -> tuple[float, float]:
    """The image threshold and the false-alarm rate it certifies, from n normal scores (N,).

    The k-th smallest score certifies α when k ≤ n; otherwise the largest score is the threshold and it certifies
    1/(n + 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"expected 0 < target_fpr < 1, got {alpha}")
    s = scores.detach().double().flatten().cpu().sort().values
    n = s.numel()
    if n == 0:
        raise ValueError("expected normal scores to take the image threshold from, got none")
    if not bool(torch.isfinite(s).all()):
        bad = int((~torch.isfinite(s)).sum())
        raise ValueError(f"expected finite scores of the held-out normals, got {bad} NaN or infinite of {n}: "
                         "the prior or its maps are broken; retrain")
    k = math.ceil((n + 1) * (1.0 - alpha) - 1e-9)
    if k <= n:
        return float(s[k - 1]), alpha
    return float(s[-1]), 1.0 / (n + 1)


def fpr_bound(n: int, alpha: float, confidence: float = 0.9) -> float:
    """The false-alarm rate that the threshold of :func:`conformal_threshold` (n scores, target α) stays under
    with probability ``confidence`` over the held-out draw: the ``confidence`` quantile of Beta(n + 1 − k, k)."""
    if n < 1:
        raise ValueError(f"expected at least one normal score, got {n}")
    k = min(n, math.ceil((n + 1) * (1.0 - alpha) - 1e-9))
    return float(stats.beta.ppf(confidence, n + 1 - k, k))


def normals_needed(alpha: float) -> int:
    """The fewest normal scores that certify α: the least n with ⌈(n + 1)(1 − α)⌉ ≤ n."""
    n = 1
    while math.ceil((n + 1) * (1.0 - alpha) - 1e-9) > n:
        n += 1
    return n


def fold_key(image_id: str) -> float:
    """A uniform number in [0, 1) fixed by an image id (salted apart from the holdout's key)."""
    return int(hashlib.sha256(f"calibration-fold|{image_id}".encode()).hexdigest()[:8], 16) / 16**8


def cross_folds(image_ids: Sequence[str], k: int = FOLDS) -> list[set[str]]:
    """The ids in min(k, n) disjoint folds covering them, each id's fold fixed by its :func:`fold_key` rank."""
    ids = sorted(set(image_ids), key=fold_key)
    n_folds = max(1, min(k, len(ids)))
    return [set(ids[f::n_folds]) for f in range(n_folds)]
