"""How many images one scoring call holds on a device, and scoring a batch in chunks that fit.

A GPU idles on small batches: the default prior at 64 px does ≈5 µs of GPU work per row and guided
step against ≈330 kernel launches, so a call needs rows = images × n ≥ 32 to keep an H200 busy. At
256 px memory is the limit instead (autograd through the paper UNet holds ≈1.15 GiB per row in fp32),
so the batch is derived from the device's free memory and halved whenever a call runs out of it.
Because an image's result never depends on its batch-mates, scoring in chunks gives the same result
as one call; the batch-coupled reproduction rules (``guidance_norm`` / ``maps.weighting`` = batch)
are the exception and are never split.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from mdps_ray.config.method import MdpsConfig
from mdps_ray.core.tiles import TileGrid
from mdps_ray.method.scorer import ScoreResult

CPU_BATCH = 8
GPU_MIN_ROWS = 32  # rows = images × n that keep a GPU busy at 64 px (issue 18, finding 8)
GPU_MAX_IMAGES = 256
PAPER_ROW_BYTES = 1.15 * 2**30  # autograd memory per row, paper UNet (base width 64) at 256 px, fp32
MEMORY_SHARE = 0.6  # of the free memory at actor start: the rest is the backbone, the allocator and peaks


def rows_per_image(cfg: MdpsConfig) -> int:
    """Sampled rows one image costs: n posterior samples of each of its tiles (one tile without tiling)."""
    n = max(cfg.sampler.stage1.n_samples, cfg.sampler.stage2.n_samples)
    if not cfg.tiling.enabled:
        return n
    side = cfg.read_size
    return n * len(TileGrid(side, side, cfg.prior.image_size, cfg.tile_stride))


def row_bytes(cfg: MdpsConfig) -> float:
    """Estimated autograd memory of one sampled row: the paper figure scaled by pixels, width and dtype."""
    pixels = (cfg.prior.image_size / 256) ** 2
    width = cfg.prior.block_out_channels[0] / 64
    dtype = 0.5 if cfg.runtime.precision in ("bf16", "fp16") else 1.0
    return PAPER_ROW_BYTES * pixels * width * dtype


def default_batch(cfg: MdpsConfig, device_kind: str, free_bytes: float | None = None) -> int:
    """Images per scoring call: ``CPU_BATCH`` on a CPU; on a GPU at least ``GPU_MIN_ROWS`` rows, or what
    ``MEMORY_SHARE`` of ``free_bytes`` holds when that is fewer (never below one image)."""
    if device_kind != "cuda":
        return CPU_BATCH
    n = rows_per_image(cfg)
    wanted = min(GPU_MAX_IMAGES, max(1, math.ceil(GPU_MIN_ROWS / n)) if cfg.tiling.enabled
                 else max(CPU_BATCH, math.ceil(GPU_MIN_ROWS / n)))
    if free_bytes is None:
        return wanted
    fits = int(free_bytes * MEMORY_SHARE // (row_bytes(cfg) * n))
    return max(1, min(wanted, fits))


def splittable(cfg: MdpsConfig) -> bool:
    """Whether a batch may be scored in chunks with the same result (no batch-coupled reproduction rule)."""
    return cfg.sampler.guidance_norm == "per_image" and cfg.maps.weighting == "per_image"


class ChunkedScorer:
    """Scores a batch in chunks of at most ``limit`` images, halving ``limit`` on out-of-memory.

    The limit found stays for later calls (the actor's batches are alike). ``score`` is the scorer's
    ``score(y, image_ids)``: y (B, 3, H, W) → :class:`ScoreResult` of B images.
    """

    def __init__(self, score: Callable[[torch.Tensor, list[str]], ScoreResult], limit: int, split: bool = True,
                 empty_cache: Callable[[], None] | None = None) -> None:
        if limit < 1:
            raise ValueError(f"expected a chunk limit >= 1, got {limit}")
        self.score_fn, self.limit, self.split = score, limit, split
        self.empty_cache = empty_cache or (lambda: None)

    def __call__(self, y: torch.Tensor, image_ids: list[str]) -> ScoreResult:
        if not self.split:
            return self.score_fn(y, image_ids)
        while True:
            try:
                parts = [self.score_fn(y[i : i + self.limit], image_ids[i : i + self.limit])
                         for i in range(0, len(image_ids), self.limit)]
                return concat_results(parts)
            except torch.OutOfMemoryError:
                if self.limit == 1:
                    raise
                self.empty_cache()
                self.limit = max(1, self.limit // 2)


def concat_results(parts: list[ScoreResult]) -> ScoreResult:
    """One :class:`ScoreResult` from consecutive chunks, in order."""
    if len(parts) == 1:
        return parts[0]

    def cat(name: str) -> torch.Tensor | None:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values)

    return ScoreResult([i for p in parts for i in p.image_ids], cat("score"), cat("anomaly_map"),  # type: ignore[arg-type]
                       cat("reconstruction"), cat("stage1_map"), cat("mask"))  # type: ignore[arg-type]
