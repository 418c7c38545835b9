"""The reduce step: merged shard states equal one pass and the exact functional metrics."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mdps_ray.metrics import functional as F
from mdps_ray.metrics.alignment import align
from mdps_ray.metrics.reduce import reduce_rows
from mdps_ray.storage.maps import read_map, save_map
from mdps_ray.storage.uris import write_bytes
from mdps_ray.workflows import stored_loaders


def _rows(n: int = 12, size: int = 16, native: int = 32) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        label = int(i % 3 == 0)
        amap = rng.random((size, size)).astype(np.float32)
        mask_uri = None
        if label:
            m = np.zeros((native, native), dtype=np.uint8)
            r, c = rng.integers(2, native - 10, 2)
            m[r : r + 6, c : c + 8] = 255
            amap[r // 2 : (r + 6) // 2, c // 2 : (c + 8) // 2] += 0.6
            buf = io.BytesIO()
            Image.fromarray(m).save(buf, format="PNG")
            mask_uri = f"memory://reduce/masks/{i}.png"
            write_bytes(mask_uri, buf.getvalue())
        map_uri = f"memory://reduce/maps/{i}.npy"
        save_map(amap, map_uri)
        rows.append({"image_id": f"c/{i}", "category": "c" if i < 8 else "d", "label": label,
                     "score": float(amap.max()), "map_uri": map_uri, "mask_uri": mask_uri,
                     "map_max": float(amap.max()), "is_anomalous": float(amap.max()) > 0.9})
    return rows


def test_shards_merge_to_the_single_pass_and_to_exact_metrics() -> None:
    rows = _rows()
    one = reduce_rows(rows, image_size=16, crop=None, loaders=stored_loaders(), shards=1)
    three = reduce_rows(rows, image_size=16, crop=None, loaders=stored_loaders(), shards=3)
    assert one == three
    c_rows = [r for r in rows if r["category"] == "c"]
    maps = torch.stack([torch.from_numpy(read_map(r["map_uri"])) for r in c_rows])
    gts = []
    for r in c_rows:
        if r["mask_uri"]:
            from mdps_ray.data.images import decode_mask
            from mdps_ray.storage.uris import read_bytes

            gts.append(decode_mask(read_bytes(r["mask_uri"]), 32)[0])
        else:
            gts.append(torch.zeros((32, 32), dtype=torch.bool))
    a, g = align(maps, torch.stack(gts), 16, None)
    exact = one["per_category"]["c"]
    assert exact["image_auroc"] == pytest.approx(F.image_auroc([r["label"] for r in c_rows],
                                                                [r["score"] for r in c_rows]))
    assert exact["pixel_auroc"] == pytest.approx(F.pixel_auroc(g, a), abs=1e-3)
    assert exact["aupro"] == pytest.approx(F.aupro(g, a), abs=1e-3)
    assert one["overall"]["n_images"] == 12
    assert one["overall"]["fraction_above_threshold"] == pytest.approx(np.mean([r["is_anomalous"] for r in rows]))
    assert set(one["per_category"]["c"]["score_stats"]) == {"n", "mean", "std", "q50", "q90", "q99"}
