"""Decoding in Ray Data CPU tasks: kept free of the model stack (no diffusers, no Ray), so the
short-lived task workers that run these functions start fast and leave the cores to the scorers.

What happens to a bad input: an unreadable, truncated, non-image or oversized (``max_pixels``) file,
an unknown protocol, an http(s) URL whose host does not answer, or a ground-truth mask that is missing
or not an image, gets its reason (naming the row's URI) in ``decode_error`` here; the score worker turns it
into a row with ``status="error"`` and that reason, and the run commits unless the error fraction
passes ``max_error_fraction`` (``orchestration/score_plan.check_complete``: no ``_SUCCESS``, exit 2).
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mdps_ray.data.images import ImageDecodeError, decode_image, decode_mask
from mdps_ray.storage.results import text_or_none
from mdps_ray.storage.uris import exists, read_bytes

Batch = dict[str, np.ndarray]


# Reads in flight per batch: object-store GETs are latency-bound, so a batch's images are fetched together.
READ_THREADS = 8


# Protocols whose every URL names its own host: a host that does not answer fails that row, not the run
# (an outage of the run's object store, s3:// or gs://, still fails the run, resumably).
ROW_HOSTED = ("http://", "https://")


def _fetch(uri: str, mask_uri: str | None, storage_options: dict[str, Any]) -> bytes | str:
    """The image's bytes, or the reason it cannot be scored (naming the row's URI): a missing or non-regular
    file, an unknown protocol, an http(s) host that does not answer, a mask that is missing or no image."""
    try:
        if "://" not in uri and os.path.exists(uri) and not stat.S_ISREG(os.stat(uri).st_mode):
            return f"not a regular file (a FIFO, socket or device is not read): {uri}"
        data = read_bytes(uri, storage_options)
        if mask_uri is not None:
            problem = _mask_problem(mask_uri, storage_options)
            if problem:
                return problem
        return data
    except FileNotFoundError:
        return f"input not found: {uri}"
    except ValueError as err:  # fsspec: "Protocol not known: foo"
        return f"cannot read {uri}: {str(err).splitlines()[0]}"
    except OSError as err:
        if not uri.lower().startswith(ROW_HOSTED):
            raise  # the store itself: the run fails and resumes
        return f"unreachable after retries: {uri}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def _mask_problem(mask_uri: str, storage_options: dict[str, Any]) -> str:
    """Why the ground-truth mask cannot serve the metrics ('' when it can): missing, or not an image."""
    if not exists(mask_uri, storage_options):
        return f"ground-truth mask not found: {mask_uri}"
    try:
        decode_mask(read_bytes(mask_uri, storage_options), 8)
    except ImageDecodeError as err:
        return f"ground-truth mask {mask_uri} is {err}"
    return ""


def decode_batch(batch: Batch, size: int, max_pixels: int, storage_options: dict[str, Any]) -> Batch:
    """Add ``pixels`` (N, 3, size, size) float32 in [−1, 1] and ``decode_error`` ('' when fine); the batch's
    reads are concurrent, the decodes one by one."""
    n = len(batch["uri"])
    pixels = np.zeros((n, 3, size, size), dtype=np.float32)
    masks = [text_or_none(m) for m in batch["mask_uri"]]
    with ThreadPoolExecutor(max(1, min(READ_THREADS, n))) as pool:
        fetched = list(pool.map(lambda i: _fetch(str(batch["uri"][i]), masks[i], storage_options), range(n)))
    errors = []
    for i, data in enumerate(fetched):
        if isinstance(data, str):
            errors.append(data)
            continue
        try:
            pixels[i] = decode_image(data, size, max_pixels).numpy()
            errors.append("")
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
