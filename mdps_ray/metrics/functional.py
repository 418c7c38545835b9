"""Exact detection and localisation metrics.

Inputs are numpy arrays or tensors: image labels (N,) in {0, 1} with scores (N,); ground-truth
masks (N, H, W) bool with anomaly maps (N, H, W) float.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _check_binary(labels: np.ndarray, what: str) -> None:
    present = set(np.unique(labels).tolist())
    if not present <= {0, 1} or len(present) < 2:
        raise ValueError(f"expected {what} with both classes 0 and 1, got values {sorted(present)}")


def image_auroc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve of image scores (scikit-learn)."""
    y, s = _np(labels).astype(int), _np(scores).astype(np.float64)
    _check_binary(y, "image labels")
    return float(roc_auc_score(y, s))


def average_precision(labels: Any, scores: Any) -> float:
    """Average precision (area under the precision-recall curve, step-wise; scikit-learn)."""
    y, s = _np(labels).astype(int), _np(scores).astype(np.float64)
    _check_binary(y, "labels")
    return float(average_precision_score(y, s))


def f1_max(labels: Any, scores: Any) -> float:
    """The best F1 over all thresholds of the precision-recall curve."""
    y, s = _np(labels).astype(int), _np(scores).astype(np.float64)
    _check_binary(y, "labels")
    precision, recall, _ = precision_recall_curve(y, s)
    f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
    return float(f1.max())


def pixel_auroc(masks: Any, maps: Any) -> float:
    """ROC AUC over every pixel of every image (the pooled pixel AUROC of MVTec)."""
    m, a = _np(masks).astype(bool).ravel(), _np(maps).astype(np.float64).ravel()
    _check_binary(m, "ground-truth pixels")
    return float(roc_auc_score(m, a))


def regions(masks: np.ndarray) -> np.ndarray:
    """Connected components (8-connected) of each mask, numbered globally from 1; (N, H, W) int."""
    out = np.zeros(masks.shape, dtype=np.int64)
    offset = 0
    for i, mask in enumerate(masks.astype(bool)):
        labelled, n = ndimage.label(mask, structure=EIGHT_CONNECTED)
        out[i] = np.where(labelled > 0, labelled + offset, 0)
        offset += n
    return out


def pro_curve(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at every distinct threshold, from the strictest; exact.

    FPR(τ) = #{normal px ≥ τ} / #{normal px};  PRO(τ) = mean over GT regions r of |{p ∈ r : A_p ≥ τ}| / |r|.
    """
    comps = regions(_np(masks).astype(bool)).ravel()
    values = _np(maps).astype(np.float64).ravel()
    n_regions = int(comps.max())
    if n_regions == 0 or (comps == 0).sum() == 0:
        raise ValueError("expected both anomalous regions and normal pixels for PRO, got only one kind")
    sizes = np.bincount(comps)
    weight = np.where(comps > 0, 1.0 / sizes[comps], 0.0)
    order = np.argsort(-values, kind="stable")
    v, w, bg = values[order], weight[order], (comps[order] == 0)
    fpr = np.cumsum(bg) / bg.sum()
    pro = np.cumsum(w) / n_regions
    last_of_value = np.r_[v[1:] != v[:-1], True]
    return np.r_[0.0, fpr[last_of_value]], np.r_[0.0, pro[last_of_value]]


def area_under_limited(fpr: np.ndarray, tpr: np.ndarray, limit: float) -> float:
    """∫₀^limit tpr d(fpr) / limit, trapezoidal, interpolating at the limit."""
    if not 0.0 < limit <= 1.0:
        raise ValueError(f"expected 0 < FPR limit <= 1, got {limit}")
    keep = fpr <= limit
    x, y = fpr[keep], tpr[keep]
    if x[-1] < limit:
        nxt = int(np.argmax(fpr > limit))
        x0, x1, y0, y1 = fpr[nxt - 1], fpr[nxt], tpr[nxt - 1], tpr[nxt]
        y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0) if x1 > x0 else y1
        x, y = np.r_[x, limit], np.r_[y, y_lim]
    return float(np.trapezoid(y, x) / limit)


def aupro(masks: Any, maps: Any, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve up to ``fpr_limit``, normalised by it (MVTec AD definition)."""
    fpr, pro = pro_curve(masks, maps)
    return area_under_limited(fpr, pro, fpr_limit)
