"""The one holdout rule: which normal training images are kept for calibration."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from mdps_ray.data.records import ImageRecord


def holdout_key(image_id: str) -> float:
    """A uniform number in [0, 1) fixed by the image id alone."""
    return int(hashlib.sha256(image_id.encode()).hexdigest()[:8], 16) / 16**8


def split_holdout(records: Sequence[ImageRecord], fraction: float) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Deterministic (train, held-out) split: an image is held out when its :func:`holdout_key` is below
    ``fraction``.

    The rule looks at each image alone, so a folder that grows between ``mdps train`` and ``mdps calibrate``
    never moves a training image into the calibration set. At least one image of each side: when no key is
    below ``fraction`` the image of the smallest key is held out, and when every key is, the image of the
    largest is trained on (small folders only).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"expected 0 < holdout fraction < 1, got {fraction}")
    if len(records) < 2:
        raise ValueError(f"expected at least 2 training images to hold some out, got {len(records)}")
    ranked = sorted(records, key=lambda r: holdout_key(r.image_id))
    hold = {r.image_id for r in ranked if holdout_key(r.image_id) < fraction} or {ranked[0].image_id}
    if len(hold) == len(records):
        hold.discard(ranked[-1].image_id)
    return [r for r in records if r.image_id not in hold], [r for r in records if r.image_id in hold]
