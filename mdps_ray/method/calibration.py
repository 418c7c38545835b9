"""Calibration on held-out normal images: the stage-1 mask threshold and the image threshold.

    mask_threshold  = Q_q( stage-1 map values of normal images )       (q = sampler.mask.quantile)
    score_threshold = Q_{1−fpr}( image scores of normal images )       (fpr = target false-positive rate)

Both are fitted after training, stored as ``calibration.json`` next to the checkpoint, and applied
unchanged at scoring time: nothing is fitted on the images being scored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from mdps_ray.config.method import method_hash
from mdps_ray.core import masking

CALIBRATION_VERSION = 1


@dataclass(frozen=True)
class Calibration:
    """Thresholds and the statistics they came from."""

    mask_threshold: float | None
    score_threshold: float
    mask_quantile: float
    target_fpr: float
    n_images: int
    score_stats: dict[str, float] = field(default_factory=dict)
    config_hash: str = ""
    model_digest: str = ""
    method_hash: str = ""  # prior/sampler/maps/score the thresholds were fitted with; "" in older files

    def to_json(self) -> dict[str, Any]:
        return {"version": CALIBRATION_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        version = data.get("version")
        if version != CALIBRATION_VERSION:
            raise ValueError(f"expected calibration.json version {CALIBRATION_VERSION}, got {version!r}")
        return cls(**{k: v for k, v in data.items() if k != "version"})


def score_statistics(scores: torch.Tensor) -> dict[str, float]:
    """Mean, std and quantiles of normal image scores (drift reference for nightly runs)."""
    s = scores.double()
    qs = {f"q{int(q * 1000):03d}": float(torch.quantile(s, q)) for q in (0.5, 0.9, 0.99)}
    return {"mean": float(s.mean()), "std": float(s.std()) if s.numel() > 1 else 0.0, **qs}


def fit_calibration(
    scorer: Any,
    batches: Iterable[tuple[torch.Tensor, list[str]]],
    target_fpr: float = 0.01,
    config_hash: str = "",
    model_digest: str = "",
) -> Calibration:
    """Fit both thresholds on batches of normal images (y in [−1, 1], ids).

    Stage 1 runs once per batch; the mask threshold is fitted on all stage-1 maps, then the same
    stage-1 maps give each image's mask for the full scoring pass.
    """
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"expected 0 < target_fpr < 1, got {target_fpr}")
    batches = list(batches)
    if not batches:
        raise ValueError("expected held-out normal images to calibrate on, got none")
    mask_cfg = scorer.sampler.mask
    mask_threshold = None
    stage1: list[torch.Tensor | None] = [None] * len(batches)
    if mask_cfg.mode != "none":
        stage1 = [scorer.stage1(y, ids) for y, ids in batches]
        values = torch.cat([m.flatten() for m in stage1 if m is not None])
        mask_threshold = masking.quantile_threshold(values, mask_cfg.quantile)
    score_list = [
        scorer.score(y, ids, mask_threshold=mask_threshold, stage1_map=s1).score
        for (y, ids), s1 in zip(batches, stage1, strict=True)
    ]
    all_scores = torch.cat(score_list)
    return Calibration(
        mask_threshold=mask_threshold,
        score_threshold=float(torch.quantile(all_scores.double(), 1.0 - target_fpr)),
        mask_quantile=mask_cfg.quantile,
        target_fpr=target_fpr,
        n_images=int(all_scores.numel()),
        score_stats=score_statistics(all_scores),
        config_hash=config_hash,
        model_digest=model_digest,
        method_hash=method_hash(scorer.prior, scorer.sampler, scorer.map_cfg, scorer.score_cfg),
    )
