"""Decoding in Ray Data CPU tasks: kept free of the model stack (no diffusers, no Ray), so the
short-lived task workers that run these functions start fast and leave the cores to the scorers.

What happens to a bad input: an unreadable, truncated, non-image or oversized (``max_pixels``) file,
or a missing ground-truth mask, gets its reason in ``decode_error`` here; the score worker turns it
into a row with ``status="error"`` and that reason, and the run commits unless the error fraction
passes ``max_error_fraction`` (``orchestration/score_plan.check_complete``: no ``_SUCCESS``, exit 2).
"""

from __future__ import annotations

import os
import stat
from typing import Any

import numpy as np

from mdps_ray.data.images import ImageDecodeError, decode_image
from mdps_ray.storage.results import text_or_none
from mdps_ray.storage.uris import exists, read_bytes

Batch = dict[str, np.ndarray]


def decode_batch(batch: Batch, size: int, max_pixels: int, storage_options: dict[str, Any]) -> Batch:
    """Add ``pixels`` (N, 3, size, size) float32 in [−1, 1] and ``decode_error`` ('' when fine)."""
    n = len(batch["uri"])
    pixels = np.zeros((n, 3, size, size), dtype=np.float32)
    errors = []
    for i, uri in enumerate(batch["uri"]):
        try:
            if "://" not in str(uri) and os.path.exists(str(uri)) and not stat.S_ISREG(os.stat(str(uri)).st_mode):
                raise ImageDecodeError(f"not a regular file (a FIFO, socket or device is not read): {uri}")
            pixels[i] = decode_image(read_bytes(str(uri), storage_options), size, max_pixels).numpy()
            mask_uri = text_or_none(batch["mask_uri"][i])
            if mask_uri is not None and not exists(mask_uri, storage_options):
                raise ImageDecodeError(f"ground-truth mask not found: {mask_uri}")
            errors.append("")
        except FileNotFoundError:
            errors.append(f"input not found: {uri}")
        except ImageDecodeError as err:
            errors.append(str(err))
    # Nullable strings as '' (a null would come back as NaN, then as the text 'nan', downstream).
    text = {k: np.array([text_or_none(v) or "" for v in batch[k]], dtype=object)
            for k in ("mask_uri", "split", "defect_type")}
    return {**batch, **text, "pixels": pixels, "decode_error": np.array(errors, dtype=object)}


def decode_for_training(batch: dict[str, np.ndarray], size: int, storage_options: dict[str, Any]
                        ) -> dict[str, np.ndarray]:
    """CPU task: bytes → (N, 3, size, size) uint8 at the prior's resolution."""
    pixels = np.stack([((decode_image(read_bytes(str(u), storage_options), size).numpy() + 1.0) * 127.5)
                       .round().clip(0, 255).astype(np.uint8) for u in batch["uri"]])
    return {"pixels": pixels, "key": batch["key"]}
