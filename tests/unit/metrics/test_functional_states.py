"""Metrics against scikit-learn, brute force, and a slow, obviously-correct AUPRO reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from mdps_ray.metrics import functional as F
from mdps_ray.metrics.states import ImageScoreState, PixelCurveState


def _case(seed: int, n: int = 4, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        for _ in range(rng.integers(0, 3)):
            r, c = rng.integers(0, size - 6, 2)
            h, w = rng.integers(2, 7, 2)
            masks[i, r : r + h, c : c + w] = True
    masks[0, 1:4, 1:4] = True
    maps = rng.random((n, size, size)) + 0.8 * masks * rng.random((n, size, size))
    return masks, np.round(maps, 2)  # rounding creates ties, the hard case


def _slow_aupro(masks: np.ndarray, maps: np.ndarray, limit: float = 0.3) -> float:
    """Per threshold: FPR over normal pixels, PRO = mean over each connected region of its overlap."""
    regions = []
    for m, a in zip(masks, maps, strict=True):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [(lab == k, a) for k in range(1, n + 1)]
    normal = maps[~masks]
    fprs, pros = [0.0], [0.0]
    for thr in sorted(np.unique(maps), reverse=True):
        fprs.append(float((normal >= thr).mean()))
        pros.append(float(np.mean([(a[r] >= thr).mean() for r, a in regions])))
    fprs_a, pros_a = np.array(fprs), np.array(pros)
    xs, ys = [0.0], [0.0]
    for i in range(1, len(fprs_a)):
        if fprs_a[i] <= limit:
            xs.append(fprs_a[i])
            ys.append(pros_a[i])
        else:
            t = (limit - fprs_a[i - 1]) / (fprs_a[i] - fprs_a[i - 1])
            xs.append(limit)
            ys.append(pros_a[i - 1] + t * (pros_a[i] - pros_a[i - 1]))
            break
    return float(np.trapezoid(ys, xs) / limit)


@pytest.mark.parametrize("seed", range(5))
def test_aupro_equals_the_slow_reference(seed: int) -> None:
    masks, maps = _case(seed)
    assert F.aupro(masks, maps) == pytest.approx(_slow_aupro(masks, maps), abs=1e-3)


def test_aupro_of_a_perfect_map_is_one_and_of_an_inverted_map_is_zero() -> None:
    masks, _ = _case(0)
    assert F.aupro(masks, masks.astype(float)) == pytest.approx(1.0)
    assert F.aupro(masks, (~masks).astype(float)) == pytest.approx(0.0)


@pytest.mark.parametrize("seed", range(3))
def test_image_metrics_equal_scikit_learn_and_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 50)
    labels[:2] = [0, 1]
    scores = np.round(rng.random(50) + 0.5 * labels, 1)
    assert F.image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert F.average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores))
    best = 0.0
    for thr in np.unique(scores):
        pred = scores >= thr
        tp = (pred & (labels == 1)).sum()
        if tp:
            p, r = tp / pred.sum(), tp / (labels == 1).sum()
            best = max(best, 2 * p * r / (p + r))
    assert F.f1_max(labels, scores) == pytest.approx(best)


def test_pixel_auroc_equals_scikit_learn() -> None:
    masks, maps = _case(1)
    assert F.pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))


def test_single_class_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="both classes"):
        F.image_auroc([0, 0], [0.1, 0.2])


def test_merged_shard_states_equal_one_pass_and_approximate_exact() -> None:
    masks, maps = _case(2, n=6)
    edges = np.linspace(maps.min(), maps.max(), 2001)
    whole = PixelCurveState(edges)
    whole.update(masks, maps)
    a, b = PixelCurveState(edges), PixelCurveState(edges)
    a.update(masks[:3], maps[:3])
    b.update(masks[3:], maps[3:])
    merged = a.merge(b)
    assert merged.compute() == whole.compute()
    assert merged.compute()["pixel_auroc"] == pytest.approx(F.pixel_auroc(masks, maps), abs=1e-3)
    assert merged.compute()["aupro"] == pytest.approx(F.aupro(masks, maps), abs=1e-3)
    s1, s2 = ImageScoreState(), ImageScoreState()
    s1.update([0, 1], [0.1, 0.9])
    s2.update([1, 0], [0.7, 0.3])
    assert s1.merge(s2).compute()["image_auroc"] == 1.0
    with pytest.raises(ValueError, match="same bin edges"):
        a.merge(PixelCurveState(np.linspace(0, 1, 11)))
