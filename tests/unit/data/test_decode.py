"""One bad row is an error row that names itself; the good rows of its batch decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mdps_ray.data.decode import decode_batch


def _batch(uris: list[str], masks: list[str | None]) -> dict[str, np.ndarray]:
    n = len(uris)
    return {"uri": np.array(uris, dtype=object), "mask_uri": np.array(masks, dtype=object),
            "split": np.array(["test"] * n, dtype=object), "defect_type": np.array([""] * n, dtype=object)}


def test_each_bad_row_names_itself_and_the_good_rows_decode(tmp_path: Path) -> None:
    """A `foo://` row ended the run with "Protocol not known: foo" naming no row; an unreachable http row made every
    rerun fail with exit 3; a mask that was no image failed the reduce after every image was scored."""
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(good)
    mask = tmp_path / "good_mask.png"
    Image.new("L", (8, 8), 255).save(mask)
    not_a_mask = tmp_path / "notes_mask.png"
    not_a_mask.write_text("this is no image")
    rows = [
        (str(good), str(mask)),
        ("foo://bucket/x.png", None),
        ("http://127.0.0.1:9/x.png", None),  # the discard port: nothing answers
        (str(good), str(not_a_mask)),
        (str(good), str(tmp_path / "missing_mask.png")),
        (str(tmp_path / "gone.png"), None),
    ]
    out = decode_batch(_batch([u for u, _ in rows], [m for _, m in rows]), 8, 10**6, {})
    errors = list(out["decode_error"])
    assert errors[0] == "" and float(np.abs(out["pixels"][0]).max()) > 0
    assert "foo://bucket/x.png" in errors[1] and "Protocol not known" in errors[1]
    assert errors[2].startswith("unreachable after retries: http://127.0.0.1:9/x.png")
    assert str(not_a_mask) in errors[3] and "not a readable image" in errors[3]
    assert errors[4] == f"ground-truth mask not found: {tmp_path / 'missing_mask.png'}"
    assert errors[5] == f"input not found: {tmp_path / 'gone.png'}"
