"""The one holdout rule: which normal training images are kept for calibration."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from mdps_ray.data.records import ImageRecord


def split_holdout(records: Sequence[ImageRecord], fraction: float) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Deterministic (train, held-out) split by a hash of each image id; at least one of each."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"expected 0 < holdout fraction < 1, got {fraction}")
    if len(records) < 2:
        raise ValueError(f"expected at least 2 training images to hold some out, got {len(records)}")

    def key(r: ImageRecord) -> float:
        return int(hashlib.sha256(r.image_id.encode()).hexdigest()[:8], 16) / 16**8

    ranked = sorted(records, key=key)
    n_hold = min(max(1, round(fraction * len(records))), len(records) - 1)
    hold = {r.image_id for r in ranked[:n_hold]}
    return [r for r in records if r.image_id not in hold], [r for r in records if r.image_id in hold]
