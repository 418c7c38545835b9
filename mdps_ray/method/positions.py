"""Per-position priors (anomalib's tiled ensemble): one prior per tile position, trained on that tile.

With ``tiling.prior="per_position"`` the image read at ``tiling.read_size`` is cut by the scorer's
grid (core/tiles.py) into T tiles; prior k is trained on tile k of every normal image, and scores
tile k of every test image. For an object (a bottle seen from above) each position has its own
normal appearance, which one shared prior of random crops has to learn all at once.

The T priors share the training budget: each gets ``max_steps`` and an equal share of the wall time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mdps_ray.config.method import MdpsConfig
from mdps_ray.core.tiles import TileGrid
from mdps_ray.method.training import PriorTrainer, fit_prior


def tile_grid(config: MdpsConfig) -> TileGrid | None:
    """The scorer's tile grid for ``config`` (None with tiling off)."""
    if not config.tiling.enabled:
        return None
    side = config.read_size
    return TileGrid(side, side, config.prior.image_size, config.tile_stride, config.tiling.seams)


def prior_count(config: MdpsConfig) -> int:
    """How many priors a model of ``config`` holds: T with per-position priors, else 1."""
    grid = tile_grid(config)
    return len(grid) if grid is not None and config.tiling.prior == "per_position" else 1


def position_tiles(images: torch.Tensor, config: MdpsConfig, k: int) -> torch.Tensor:
    """Tile k of every image: (N, 3, R, R) read at ``tiling.read_size`` → (N, 3, t, t)."""
    grid = tile_grid(config)
    if grid is None or not 0 <= k < len(grid):
        raise ValueError(f"expected a tile position in [0, {prior_count(config)}), got {k}")
    top, left = grid.origins[k]
    t = grid.tile
    return images[..., top : top + t, left : left + t]


def fit_position_priors(
    images: torch.Tensor,
    config: MdpsConfig,
    max_steps: int,
    max_seconds: float | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> list[PriorTrainer]:
    """Train the T per-position priors one after another in this process (the quality harness, the demo).

    Each is :func:`fit_prior` on its tiles with ``max_steps`` and ``max_seconds / T``; the distributed job
    trains them as parallel Ray tasks instead (orchestration/train_job.py).
    """
    count = prior_count(config)
    share = None if max_seconds is None else max_seconds / count
    return [fit_prior(position_tiles(images, config, k), config.prior, config.train, max_steps, share, on_step)
            for k in range(count)]
