"""The reduce step: per-shard mergeable states from committed rows and maps → metrics per category.

A shard is any subset of rows; :func:`shard_states` turns it into states that merge by sum or
concatenation, so the result does not depend on how the rows were split. Metrics do no I/O: the
maps and masks a row names come through the :class:`RowLoaders` the caller gives (storage-bound
ones are built by ``mdps_ray.workflows.stored_loaders``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mdps_ray.core.scores import score_summary
from mdps_ray.metrics.alignment import align
from mdps_ray.metrics.states import ImageScoreState, PixelCurveState

NUM_BINS = 10_000


@dataclass(frozen=True)
class RowLoaders:
    """How the reduce reads what a row names (picklable callables, so Ray tasks can carry them).

    Attributes:
        anomaly_map: ``map_uri`` → the row's map, (h, w) float32.
        mask: (``mask_uri``, side) → ground truth resized to side × side, (1, side, side) bool.
        mask_side: ``mask_uri`` → the mask's native side length (the evaluation grid).
    """

    anomaly_map: Callable[[str], np.ndarray]
    mask: Callable[[str, int], torch.Tensor]
    mask_side: Callable[[str], int]


@dataclass
class ShardStates:
    """Mergeable states of one category's shard."""

    images: ImageScoreState
    pixels: PixelCurveState | None
    scores: list[float]

    def merge(self, other: ShardStates) -> ShardStates:
        if self.pixels is None or other.pixels is None:
            pixels = self.pixels or other.pixels
        else:
            pixels = self.pixels.merge(other.pixels)
        return ShardStates(self.images.merge(other.images), pixels, self.scores + other.scores)


def shard_states(rows: list[dict[str, Any]], edges: np.ndarray, image_size: int, crop: int | None,
                 gt_size: int | None, loaders: RowLoaders) -> ShardStates:
    """States from result rows of one category (status ok); maps and masks come through ``loaders``.

    ``gt_size`` is the category's evaluation grid (the masks' native size); None skips pixel metrics.
    """
    images = ImageScoreState()
    pixels = PixelCurveState(edges)
    has_pixels = False
    for r in rows:
        if r["label"] is None:
            continue
        images.update([r["label"]], [r["score"]])
        if gt_size is None or r["map_uri"] is None:
            continue
        amap = torch.from_numpy(loaders.anomaly_map(r["map_uri"]))[None]
        if r["mask_uri"]:
            gt = loaders.mask(r["mask_uri"], gt_size)
        else:
            gt = torch.zeros((1, gt_size, gt_size), dtype=torch.bool)
        a, g = align(amap, gt, image_size, crop)
        pixels.update(g.numpy(), a.numpy())
        has_pixels = True
    return ShardStates(images, pixels if has_pixels else None, [float(r["score"]) for r in rows])


def mask_size(rows: list[dict[str, Any]], loaders: RowLoaders) -> int | None:
    """Native side length of the first ground-truth mask among ``rows`` (None when none has one)."""
    first = next((r["mask_uri"] for r in rows if r["mask_uri"]), None)
    return None if first is None else loaders.mask_side(first)


def finalize(states: ShardStates) -> dict[str, Any]:
    """Metrics of merged states: image AUROC/AP/F1-max, pixel AUROC, AUPRO@0.3, or score quantiles."""
    labels = states.images.labels
    out: dict[str, Any] = {"n_images": float(len(states.scores)), "n_anomalous": float(sum(labels))}
    if len(set(labels)) == 2:
        out.update(states.images.compute())
        if states.pixels is not None and states.pixels.anomalous.sum() > 0:
            out.update(states.pixels.compute())
    out["score_stats"] = score_summary(torch.tensor(states.scores, dtype=torch.float64))
    return out


def reduce_rows(rows: list[dict[str, Any]], image_size: int, crop: int | None, loaders: RowLoaders, shards: int = 1,
                mapper: Callable[[Iterable[Any]], Iterable[ShardStates]] | None = None) -> dict[str, Any]:
    """Metrics per category and overall; ``mapper`` runs shard_states in parallel (Ray tasks)."""
    hi = max((r["map_max"] for r in rows if r["map_max"] is not None), default=1.0)
    edges = np.linspace(0.0, max(hi, 1e-12) * (1 + 1e-9), NUM_BINS + 1)
    by_cat: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_cat.setdefault(r["category"], []).append(r)
    jobs = [(cat, part) for cat, rs in sorted(by_cat.items()) for part in np.array_split(np.arange(len(rs)), shards)
            if len(part)]
    sizes = {cat: mask_size(rs, loaders) for cat, rs in by_cat.items()}
    args = [([by_cat[cat][i] for i in part], edges, image_size, crop, sizes[cat], loaders)
            for cat, part in jobs]
    results = list(mapper(args)) if mapper else [shard_states(*a) for a in args]
    merged: dict[str, ShardStates] = {}
    for (cat, _), st in zip(jobs, results, strict=True):
        merged[cat] = merged[cat].merge(st) if cat in merged else st
    out: dict[str, Any] = {"per_category": {c: finalize(s) for c, s in merged.items()}}
    total = None
    for s in merged.values():
        total = s if total is None else total.merge(s)
    out["overall"] = finalize(total) if total is not None else {"n_images": 0.0}
    flagged = [bool(r["is_anomalous"]) for r in rows if r.get("is_anomalous") is not None]
    if flagged:  # the worker's decision per row (calibration.is_anomalous), not recomputed here
        out["overall"]["fraction_above_threshold"] = float(np.mean(flagged))
    return out
