"""Drift of a night's images against the calibration normals: has the acquisition changed?

For each acquisition statistic (``core/acquisition.py``: brightness, contrast, sharpness) the night's values
are compared with the calibration normals' by a two-sample Kolmogorov–Smirnov test. A statistic drifts when
both hold:

- the test rejects at α / 3 (Bonferroni over the three statistics, so a night of ordinary images is
  called drifted with probability at most α), and
- the shift of the median is larger than :data:`MIN_SHIFT` (brightness in gray levels of [0, 1], contrast
  and sharpness relative to the calibration median) and than :data:`SPREAD` robust standard deviations of
  the normals' values: a large night detects shifts too small to matter, and a defect covers too little of
  an image to move its median.

With too few images for the test to reach α / 3 at all (a calibration of a handful of normals: 3 against 10
cannot), the shift alone decides, against the same floors. Measured at 64 px (30 training normals as the
reference, 10–30 test images a night): the median brightness of ordinary nights, good or defective, moved by
at most 0.006 on MVTec bottle and 0.007 on KolektorSDD; PIL brightness ×1.1 moved it by 0.021 / 0.066, ×1.2
by 0.039 / 0.135.

The scores are summarised beside it (median p-value; the one-sample KS distance of the p-values from the
uniform law they follow on normal images), but do not decide drift: a night with many real defects has
small p-values without any change of acquisition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as st

DRIFT_ALPHA = 0.01
# Smallest median shift that counts: brightness in gray levels of [0, 1] (0.02 ≈ 5 of 255), the others relative.
MIN_SHIFT = {"brightness": 0.02, "contrast": 0.10, "sharpness": 0.20}
SPREAD = 2.0  # ... and than this many robust standard deviations of the calibration normals' values
RELATIVE = {"brightness": False, "contrast": True, "sharpness": True}
MIN_IMAGES = 3  # a night with fewer gets no verdict
MIN_REFERENCE = 2  # calibration normals a verdict needs


def _robust_std(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def stat_drift(name: str, today: np.ndarray, reference: np.ndarray, alpha: float) -> dict[str, Any]:
    """One statistic's test (module docstring): medians, shift, KS distance and p-value, and the verdict."""
    med_ref, med_today = float(np.median(reference)), float(np.median(today))
    shift = med_today - med_ref
    scale = abs(med_ref) if RELATIVE[name] else 1.0
    needed = max(MIN_SHIFT[name] * scale, SPREAD * _robust_std(reference))
    test = st.ks_2samp(today, reference)
    testable = can_reject(len(today), len(reference), alpha / len(MIN_SHIFT))
    drifted = bool((test.pvalue < alpha / len(MIN_SHIFT) or not testable) and abs(shift) > needed)
    return {"median_today": med_today, "median_calibration": med_ref,
            "shift": shift / scale if RELATIVE[name] else shift, "ks": float(test.statistic),
            "ks_p_value": float(test.pvalue), "test": "ks" if testable else "shift only", "drifted": drifted}


def can_reject(n: int, m: int, level: float) -> bool:
    """Whether a two-sample KS test of n against m values can reach ``level`` at all (its p-value for two
    samples that do not overlap). Below that (a calibration of a handful of normals), the shift decides alone."""
    return bool(st.ks_2samp(np.zeros(n), np.ones(m)).pvalue < level)


def acquisition_drift(today: Mapping[str, Sequence[float]], reference: Mapping[str, Sequence[float]],
                      p_values: Sequence[float] = (), alpha: float = DRIFT_ALPHA) -> dict[str, Any]:
    """A night's drift against the calibration normals (module docstring).

    Args:
        today: statistic name → the night's values (nulls already dropped).
        reference: statistic name → the calibration normals' values (``Calibration.normal_acquisition``).
        p_values: the night's conformal p-values (may be empty).

    Returns:
        ``n``, ``drifted`` (None when there is nothing to compare), ``reasons`` (one phrase per drifted
        statistic), ``stats`` (per statistic: :func:`stat_drift`), ``median_p_value`` and ``p_value_ks``.
    """
    n = min((len(v) for v in today.values()), default=0)
    out: dict[str, Any] = {"n": n, "alpha": alpha, "drifted": None, "reasons": [], "stats": {}}
    p = np.asarray([v for v in p_values if v is not None and v == v], dtype=np.float64)
    out["median_p_value"] = float(np.median(p)) if p.size else None
    out["p_value_ks"] = float(st.kstest(p, "uniform").statistic) if p.size else None
    names = [k for k in MIN_SHIFT if k in today and len(reference.get(k, ())) >= MIN_REFERENCE]
    if n < MIN_IMAGES or not names:
        return out
    for name in names:
        one = stat_drift(name, np.asarray(today[name], np.float64), np.asarray(reference[name], np.float64), alpha)
        out["stats"][name] = one
        if one["drifted"]:
            unit = "" if not RELATIVE[name] else " (relative)"
            out["reasons"].append(f"{name} {one['shift']:+.3f}{unit}, KS p={one['ks_p_value']:.2g}")
    out["drifted"] = bool(out["reasons"])
    return out
