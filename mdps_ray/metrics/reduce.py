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
import pyarrow as pa
import pyarrow.compute as pc
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
    scores: np.ndarray  # (n,) float64: every row's score, labelled or not

    def merge(self, other: ShardStates) -> ShardStates:
        if self.pixels is None or other.pixels is None:
            pixels = self.pixels or other.pixels
        else:
            pixels = self.pixels.merge(other.pixels)
        return ShardStates(self.images.merge(other.images), pixels, np.concatenate([self.scores, other.scores]))


def shard_states(rows: list[dict[str, Any]] | pa.Table, edges: np.ndarray, image_size: int, crop: int | None,
                 gt_size: int | None, loaders: RowLoaders) -> ShardStates:
    """States from result rows of one category (status ok; a list of rows or an Arrow shard of
    :data:`REDUCE_COLUMNS`); maps and masks come through ``loaders``.

    ``gt_size`` is the category's evaluation grid (the masks' native size); None skips pixel metrics.
    """
    if isinstance(rows, pa.Table):
        rows = rows.to_pylist()  # one shard's rows, in the task that reduces it
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
    return ShardStates(images, pixels if has_pixels else None, np.array([float(r["score"]) for r in rows]))


def mask_size(mask_uris: pa.ChunkedArray | pa.Array, loaders: RowLoaders) -> int | None:
    """Native side length of the first ground-truth mask among ``mask_uris`` (None when none has one)."""
    present = pc.drop_null(mask_uris)
    present = present.filter(pc.not_equal(present, ""))
    return None if len(present) == 0 else loaders.mask_side(present[0].as_py())


def finalize(states: ShardStates) -> dict[str, Any]:
    """Metrics of merged states: image AUROC/AP/F1-max, pixel AUROC, AUPRO@0.3, or score quantiles."""
    labels = states.images.labels
    out: dict[str, Any] = {"n_images": float(len(states.scores)), "n_anomalous": float(sum(labels))}
    if len(set(labels)) == 2:
        out.update(states.images.compute())
        if states.pixels is not None and states.pixels.anomalous.sum() > 0:
            out.update(states.pixels.compute())
    out["score_stats"] = score_summary(torch.from_numpy(np.asarray(states.scores, dtype=np.float64)))
    return out


# What the reduce reads of a result row; nothing else of a run's rows is loaded.
REDUCE_COLUMNS = ["category", "label", "score", "map_uri", "mask_uri", "map_max", "is_anomalous"]


def reduce_rows(rows: list[dict[str, Any]], image_size: int, crop: int | None, loaders: RowLoaders, shards: int = 1,
                mapper: Callable[[Iterable[Any]], Iterable[ShardStates]] | None = None) -> dict[str, Any]:
    """:func:`reduce_table` of rows in memory, each category split into ``shards`` shards."""
    if not rows:
        return reduce_table(pa.table({c: pa.array([], type=pa.string()) for c in REDUCE_COLUMNS}), image_size,
                            crop, loaders)
    table = pa.Table.from_pylist([{c: r.get(c) for c in REDUCE_COLUMNS} for r in rows])
    per_cat = max(pc.value_counts(table.column("category")).field("counts").to_pylist())
    return reduce_table(table, image_size, crop, loaders, max(1, -(-per_cat // shards)), mapper)


def reduce_table(table: pa.Table, image_size: int, crop: int | None, loaders: RowLoaders,
                 shard_rows: int = 100_000,
                 mapper: Callable[[Iterable[Any]], Iterable[ShardStates]] | None = None) -> dict[str, Any]:
    """Metrics per category and overall from scored rows (status ok; at least :data:`REDUCE_COLUMNS`).

    Unlabelled rows (a nightly archive) add their scores only, from the column. Each category's labelled
    rows, ordered by map URI (batch-mates share a map chunk), are cut into Arrow shards of
    ``shard_rows``; ``mapper`` runs :func:`shard_states` on them in parallel (Ray tasks). Nothing here
    holds a Python object per row: only a shard does, where it is reduced.
    """
    table = table.select(REDUCE_COLUMNS)
    hi = pc.max(table.column("map_max")).as_py() if table.num_rows else None
    edges = np.linspace(0.0, max(hi if hi is not None else 1.0, 1e-12) * (1 + 1e-9), NUM_BINS + 1)
    jobs, sizes, merged = [], {}, {}
    for cat in sorted(pc.unique(table.column("category")).to_pylist()):
        part = table.filter(pc.equal(table.column("category"), cat))
        unlabelled = part.filter(pc.is_null(part.column("label")))  # scores only: no map is read for them
        merged[cat] = ShardStates(ImageScoreState(), None, unlabelled.column("score").to_numpy().astype(np.float64))
        part = part.filter(pc.is_valid(part.column("label"))).sort_by("map_uri")
        sizes[cat] = mask_size(part.column("mask_uri"), loaders)
        jobs += [(cat, part.slice(start, shard_rows)) for start in range(0, part.num_rows, shard_rows)]
    args = [(shard, edges, image_size, crop, sizes[cat], loaders) for cat, shard in jobs]
    results = list(mapper(args)) if mapper and args else [shard_states(*a) for a in args]
    for (cat, _), st in zip(jobs, results, strict=True):
        merged[cat] = merged[cat].merge(st)
    out: dict[str, Any] = {"per_category": {c: finalize(s) for c, s in merged.items()}}
    total = None
    for s in merged.values():
        total = s if total is None else total.merge(s)
    out["overall"] = finalize(total) if total is not None else {"n_images": 0.0}
    flags = pc.drop_null(table.column("is_anomalous"))
    if len(flags):  # the worker's decision per row (calibration.is_anomalous), not recomputed here
        out["overall"]["fraction_above_threshold"] = float(pc.mean(flags.cast(pa.float64())).as_py())
    return out
