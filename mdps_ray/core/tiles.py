"""Tiles of an image for a prior that sees a small window, and the stitched map at the input's grid.

An image x of H × W is cut into tiles of side t at the positions of a grid with stride s; the last
row and column of tiles are moved to end exactly at the border, so every pixel is covered and no
padding is invented:

    tops  = (0, s, 2s, …, H − t)        lefts = (0, s, 2s, …, W − t)
    tile (r, c) = x[..., tops[r] : tops[r] + t, lefts[c] : lefts[c] + t]

Stitching is a weighted average over the tiles covering a pixel p:

    A(p) = Σ_k w_k(p) A_k(p) / Σ_k w_k(p)

with w = 1 ("flat": the plain mean in overlaps) or a separable window that falls towards the tile's
edges ("smooth": seam smoothing, 1 in the centre, ``floor`` at the edge, so a pixel seen by one tile
only keeps its value). Rows are image-major: tile k of image b is row b·T + k.

A per-position prior is T networks ε_θ^k, one per tile position; with n posterior samples per tile the
sampler's rows are (image b, tile k, sample j) → row (b·T + k)·n + j, and :func:`by_position` sends
each row to ε_θ^k of its tile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from mdps_ray.core.guidance import Denoiser

Seams = Literal["flat", "smooth"]


def positions(side: int, tile: int, stride: int) -> list[int]:
    """Start offsets of the tiles along one axis of length ``side`` (the last one ends at the border)."""
    if not 1 <= stride <= tile <= side:
        raise ValueError(f"expected 1 <= stride <= tile <= image side, got stride={stride}, tile={tile}, side={side}")
    starts = list(range(0, side - tile + 1, stride))
    if starts[-1] != side - tile:
        starts.append(side - tile)
    return starts


@dataclass(frozen=True)
class TileGrid:
    """The tiles of an H × W image: ``tile`` px windows at ``stride``.

    Attributes:
        height, width: the image side lengths H, W.
        tile: tile side t.
        stride: grid step s (s < t overlaps).
        seams: ``"flat"`` or ``"smooth"`` stitching weights.
    """

    height: int
    width: int
    tile: int
    stride: int
    seams: Seams = "flat"

    @property
    def origins(self) -> list[tuple[int, int]]:
        """(top, left) of each tile, row-major; T = len(origins)."""
        return [(t, left) for t in positions(self.height, self.tile, self.stride)
                for left in positions(self.width, self.tile, self.stride)]

    def __len__(self) -> int:
        return len(self.origins)

    def cut(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B·T, C, t, t), image-major (no copy of the whole image per tile beyond the tile)."""
        self._check(x)
        t = self.tile
        tiles = torch.stack([x[..., top : top + t, left : left + t] for top, left in self.origins], dim=1)
        return tiles.flatten(0, 1)

    def tile_ids(self, image_ids: list[str]) -> list[str]:
        """One key per tile, ``<image_id>#<top>,<left>``: a tile's noise depends on its image and position only."""
        return [f"{image_id}#{top},{left}" for image_id in image_ids for top, left in self.origins]

    def stitch(self, tiles: torch.Tensor) -> torch.Tensor:
        """(B·T, C, t, t) → (B, C, H, W): the weighted average of the tiles covering each pixel."""
        n = len(self)
        if tiles.ndim != 4 or tiles.shape[0] % n or tuple(tiles.shape[-2:]) != (self.tile, self.tile):
            raise ValueError(f"expected ({n}·B, C, {self.tile}, {self.tile}) tiles, got {tuple(tiles.shape)}")
        b, c, t = tiles.shape[0] // n, tiles.shape[1], self.tile
        w = self.window(tiles.dtype, tiles.device)
        total = tiles.new_zeros((b, c, self.height, self.width))
        weight = tiles.new_zeros((1, 1, self.height, self.width))
        per_image = tiles.view(b, n, c, t, t)
        for k, (top, left) in enumerate(self.origins):
            total[..., top : top + t, left : left + t] += w * per_image[:, k]
            weight[..., top : top + t, left : left + t] += w
        return total / weight

    def window(self, dtype: torch.dtype, device: torch.device, floor: float = 0.1) -> torch.Tensor:
        """The (t, t) stitching weight: ones ("flat"), or a separable raised cosine from ``floor`` at the edge
        to 1 in the centre ("smooth")."""
        if self.seams == "flat":
            return torch.ones((self.tile, self.tile), dtype=dtype, device=device)
        r = torch.arange(self.tile, dtype=torch.float64)
        ramp = floor + (1 - floor) * torch.sin(math.pi * (r + 0.5) / self.tile) ** 2
        return torch.outer(ramp, ramp).to(dtype=dtype, device=device)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"expected images of shape (B, C, {self.height}, {self.width}), got {tuple(x.shape)}")


def by_position(denoisers: Sequence[Denoiser], n_samples: int) -> Denoiser:
    """ε_θ over rows (b·T + k)·n + j that applies the k-th of the T ``denoisers`` to the rows of tile k.

    x_t (B·T·n, C, t, t) and timesteps (B·T·n,) → ε (B·T·n, C, t, t); each row sees only its position's
    network, so a row's output does not depend on the other rows.
    """
    positions = len(denoisers)
    group = positions * n_samples

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x_t.shape[0] % group:
            raise ValueError(f"expected rows in whole images of {positions} tiles x {n_samples} samples, "
                             f"got {x_t.shape[0]} rows")
        x = x_t.view(-1, positions, n_samples, *x_t.shape[1:])
        steps = t.view(-1, positions, n_samples)
        eps = [net(x[:, k].flatten(0, 1), steps[:, k].flatten()) for k, net in enumerate(denoisers)]
        return torch.stack([e.view(-1, n_samples, *e.shape[1:]) for e in eps], dim=1).flatten(0, 2)

    return denoise
