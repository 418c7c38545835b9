"""Tiles and stitching, checked against hand-computed values (issue 16)."""

from __future__ import annotations

import pytest
import torch

from mdps_ray.core.tiles import TileGrid, positions


def test_the_last_tile_ends_at_the_border() -> None:
    assert positions(10, 4, 3) == [0, 3, 6]
    assert positions(11, 4, 3) == [0, 3, 6, 7]
    assert positions(4, 4, 4) == [0]
    with pytest.raises(ValueError, match="stride <= tile <= image side"):
        positions(3, 4, 2)


@pytest.mark.parametrize("seams", ["flat", "smooth"])
def test_a_constant_map_stitches_to_the_constant_and_cut_then_stitch_is_the_image(seams: str) -> None:
    grid = TileGrid(11, 13, tile=4, stride=3, seams=seams)  # type: ignore[arg-type]
    constant = torch.full((2 * len(grid), 1, 4, 4), 0.25, dtype=torch.float64)
    assert torch.equal(grid.stitch(constant), torch.full((2, 1, 11, 13), 0.25, dtype=torch.float64))
    x = torch.rand((2, 3, 11, 13), dtype=torch.float64)
    assert torch.allclose(grid.stitch(grid.cut(x)), x, atol=1e-12)


def test_overlaps_average_the_tiles_that_cover_a_pixel() -> None:
    grid = TileGrid(2, 3, tile=2, stride=1)  # two tiles: columns 0-1 and 1-2
    tiles = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2)
    assert grid.stitch(tiles).tolist() == [[[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]]]
    smooth = TileGrid(2, 3, tile=2, stride=1, seams="smooth")
    w = smooth.window(torch.float64, torch.device("cpu"))  # equal weights at both edges of a 2 px tile
    assert torch.allclose(w, w.flip(0).flip(1))
    assert smooth.stitch(tiles.double())[0, 0, 0].tolist() == pytest.approx([1.0, 2.0, 3.0])


def test_tiles_are_image_major_and_keyed_by_image_and_position() -> None:
    grid = TileGrid(4, 4, tile=2, stride=2)
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4)
    tiles = grid.cut(x)
    assert tiles.shape == (8, 1, 2, 2)
    assert torch.equal(tiles[4], x[1, :, :2, :2]) and torch.equal(tiles[3], x[0, :, 2:, 2:])
    assert grid.tile_ids(["a", "b"])[:2] == ["a#0,0", "a#0,2"] and grid.tile_ids(["a", "b"])[4] == "b#0,0"
    with pytest.raises(ValueError, match=r"expected images of shape \(B, C, 4, 4\)"):
        grid.cut(torch.zeros((1, 1, 4, 5)))
    with pytest.raises(ValueError, match="tiles"):
        grid.stitch(torch.zeros((3, 1, 2, 2)))
