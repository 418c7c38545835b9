"""Read images (and masks) named by records or URIs into batches of tensors."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from PIL import Image

from mdps_ray.io.datasets import ImageRecord
from mdps_ray.io.images import decode_image, decode_mask
from mdps_ray.io.uris import read_bytes


def load_images(uris: Sequence[str], size: int, storage_options: dict[str, Any] | None = None) -> torch.Tensor:
    """(N, 3, size, size) in [−1, 1] from image URIs/paths."""
    if not uris:
        raise ValueError("expected at least one image, got none")
    return torch.stack([decode_image(read_bytes(u, storage_options), size) for u in uris])


def load_masks(
    records: Sequence[ImageRecord], size: int, storage_options: dict[str, Any] | None = None
) -> torch.Tensor:
    """(N, 1, size, size) bool ground truth; all-zero for records without a mask."""
    out = torch.zeros((len(records), 1, size, size), dtype=torch.bool)
    for i, r in enumerate(records):
        if r.mask_uri is not None:
            out[i] = decode_mask(read_bytes(r.mask_uri, storage_options), size)
    return out


def iter_batches(
    records: Sequence[ImageRecord], size: int, batch_size: int, storage_options: dict[str, Any] | None = None
) -> Iterator[tuple[torch.Tensor, list[str], list[ImageRecord]]]:
    """(images, ids, records) batches in record order."""
    for i in range(0, len(records), batch_size):
        chunk = list(records[i : i + batch_size])
        yield load_images([r.uri for r in chunk], size, storage_options), [r.image_id for r in chunk], chunk


def native_mask_size(records: Sequence[ImageRecord], storage_options: dict[str, Any] | None = None) -> int | None:
    """Side length of the first ground-truth mask (the evaluation grid), or None without masks."""
    for r in records:
        if r.mask_uri is not None:
            with Image.open(io.BytesIO(read_bytes(r.mask_uri, storage_options))) as im:
                return int(im.size[0])
    return None
