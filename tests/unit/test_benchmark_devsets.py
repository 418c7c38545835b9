"""The development category with heterogeneous normals (benchmarks/devsets.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.devsets import acquisition, make_devset
from mdps_ray.data.records import list_mvtec


def test_every_image_is_relit_its_own_way_and_the_masks_stay(synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / synthetic_root.name  # image ids carry the category name
    n = make_devset(synthetic_root, out)
    before = list_mvtec(str(synthetic_root), "train") + list_mvtec(str(synthetic_root), "test")
    assert n == len(before)
    after = {r.image_id: r for r in list_mvtec(str(out), "train") + list_mvtec(str(out), "test")}
    means = []
    for r in before:
        lit = after[r.image_id]
        a, b = np.asarray(Image.open(r.uri), dtype=float), np.asarray(Image.open(lit.uri), dtype=float)
        assert a.shape == b.shape and not np.array_equal(a, b)
        means.append(b.mean() - a.mean())
        if r.mask_uri:
            assert Path(lit.mask_uri).read_bytes() == Path(r.mask_uri).read_bytes()
    assert np.std(means) > 5  # the brightness changes from image to image (8-bit levels)
    assert acquisition("train/good/000.png") == acquisition("train/good/000.png") != acquisition("train/good/001.png")
