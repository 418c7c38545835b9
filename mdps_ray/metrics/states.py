"""Mergeable metric states: shards accumulate, a reduce step sums or concatenates, then computes.

- :class:`ImageScoreState` keeps every (label, score) pair: exact image AUROC, AP and F1-max.
- :class:`PixelCurveState` keeps histograms over fixed bin edges: normal and anomalous pixel
  counts (summed) and one histogram per ground-truth region (concatenated). Memory is
  O(bins · regions), independent of the number of pixels; pixel AUROC and AUPRO are computed at
  the bin edges, which approximates the exact values as the bins get finer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mdps_ray.metrics import functional as F


@dataclass
class ImageScoreState:
    """(label, score) pairs of labelled images."""

    labels: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    def update(self, labels: Any, scores: Any) -> None:
        self.labels.extend(int(v) for v in F._np(labels).ravel())
        self.scores.extend(float(v) for v in F._np(scores).ravel())

    def merge(self, other: ImageScoreState) -> ImageScoreState:
        return ImageScoreState(self.labels + other.labels, self.scores + other.scores)

    def compute(self) -> dict[str, float]:
        return {
            "image_auroc": F.image_auroc(self.labels, self.scores),
            "ap": F.average_precision(self.labels, self.scores),
            "f1_max": F.f1_max(self.labels, self.scores),
        }


@dataclass
class PixelCurveState:
    """Binned pixel statistics over fixed edges (ascending, length bins + 1)."""

    edges: np.ndarray
    normal: np.ndarray = field(init=False)
    anomalous: np.ndarray = field(init=False)
    region_hists: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.edges = np.asarray(self.edges, dtype=np.float64)
        if self.edges.ndim != 1 or len(self.edges) < 2 or np.any(np.diff(self.edges) <= 0):
            raise ValueError("expected strictly ascending bin edges (at least 2)")
        self.normal = np.zeros(len(self.edges) - 1, dtype=np.int64)
        self.anomalous = np.zeros(len(self.edges) - 1, dtype=np.int64)

    def _bin(self, values: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.edges, values, side="right") - 1
        return np.clip(idx, 0, len(self.edges) - 2)

    def update(self, masks: Any, maps: Any) -> None:
        """Add images: masks (N, H, W) bool, maps (N, H, W) float."""
        masks_np, maps_np = F._np(masks).astype(bool), F._np(maps).astype(np.float64)
        bins = self._bin(maps_np)
        nb = len(self.edges) - 1
        self.normal += np.bincount(bins[~masks_np], minlength=nb)
        self.anomalous += np.bincount(bins[masks_np], minlength=nb)
        comps = F.regions(masks_np)
        for r in range(int(comps.min(initial=0)) + 1, int(comps.max(initial=0)) + 1):
            self.region_hists.append(np.bincount(bins[comps == r], minlength=nb))

    def merge(self, other: PixelCurveState) -> PixelCurveState:
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("expected states with the same bin edges, got different ones")
        out = PixelCurveState(self.edges)
        out.normal = self.normal + other.normal
        out.anomalous = self.anomalous + other.anomalous
        out.region_hists = self.region_hists + other.region_hists
        return out

    def _rates(self, counts: np.ndarray) -> np.ndarray:
        """Fraction of pixels at or above each bin's lower edge, strictest first, with a leading 0."""
        tail = np.cumsum(counts[::-1])
        return np.r_[0.0, tail / max(tail[-1], 1)]

    def compute(self, fpr_limit: float = 0.3) -> dict[str, float]:
        fpr = self._rates(self.normal)
        tpr = self._rates(self.anomalous)
        out = {"pixel_auroc": float(np.trapezoid(tpr, fpr))}
        if self.region_hists:
            pro = np.mean([self._rates(h) for h in self.region_hists], axis=0)
            out["aupro"] = F.area_under_limited(fpr, pro, fpr_limit)
        return out
