"""Calibration on held-out normal images: the stage-1 mask threshold and the image threshold.

    level model     = log σᵢ ≈ φ(yᵢ)·β, σᵢ the median of image i's stage-1 map  (maps.normalise)
    mask_threshold  = Q_q( A₁/σ̂(y) values of normal images )           (q = sampler.mask.quantile)
    score_threshold = Q_{1−fpr}( image scores of normal images )       (fpr = target false-positive rate)

Both are fitted after training, stored as ``calibration.json`` next to the checkpoint, and applied
unchanged at scoring time: nothing is fitted on the images being scored.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import torch

from mdps_ray.config.method import MaskConfig, MdpsConfig, method_hash
from mdps_ray.core import maps, masking
from mdps_ray.core.scores import score_summary

CALIBRATION_VERSION = 1
MIN_CALIBRATION_IMAGES = 3  # fewer held-out normals than this give thresholds from one or two values
T = TypeVar("T")


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
    level_model: tuple[float, ...] | None = None  # σ̂(y): (β₀, β₁, β₂, σ_min, σ_max); None: raw maps, older files

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.level_model is not None:
            data["level_model"] = list(self.level_model)  # what a JSON round trip gives back
        return {"version": CALIBRATION_VERSION, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        version = data.get("version")
        if version != CALIBRATION_VERSION:
            raise ValueError(f"expected calibration.json version {CALIBRATION_VERSION}, got {version!r}")
        fields = {k: v for k, v in data.items() if k != "version"}
        stats = fields.get("score_stats") or {}
        fields["score_stats"] = {_OLD_SUMMARY_KEYS.get(k, k): v for k, v in stats.items()}
        if fields.get("level_model") is not None:
            fields["level_model"] = tuple(float(v) for v in fields["level_model"])
        return cls(**fields)


def resolve_mask_threshold(mask: MaskConfig, transductive: float | None, calibrated: float | None) -> float | None:
    """The stage-1 mask threshold τ a scorer uses, decided here and nowhere else.

    Precedence: explicit (``sampler.mask.threshold``) > transductive (the scored set's
    min + f·(max − min), mode ``transductive`` only) > calibrated (``calibration.json``).
    None with mask mode ``none`` (single stage), or when nothing gives one (the scorer then refuses).
    """
    if mask.mode == "none":
        return None
    if mask.threshold is not None:
        return mask.threshold
    if mask.mode == "transductive":
        return transductive
    return calibrated


def stale_calibration(calibration: Calibration | None, config: MdpsConfig, where: str) -> str | None:
    """The warning to give when ``calibration`` was fitted with other prior/sampler/maps/score settings
    than ``config`` (runtime knobs do not count); None when it fits, is absent, or predates the hash."""
    if calibration is None or not calibration.method_hash:
        return None
    if calibration.method_hash == method_hash(config.prior, config.sampler, config.maps, config.score, config.tiling):
        return None
    return (f"expected the sampler/maps/score settings that calibration.json of {where} was fitted with, got "
            "different ones (a config or overrides): its mask and score thresholds may not fit these maps; "
            "recalibrate with `mdps calibrate --model … --data …` and the same settings")


def is_anomalous(scores: torch.Tensor, score_threshold: float) -> torch.Tensor:
    """The image decision, (B,) bool: s > the calibrated image threshold (the one place it is taken)."""
    return scores > score_threshold


# Older calibration.json files used q500/q900/q990 for the score quantiles.
_OLD_SUMMARY_KEYS = {"q500": "q50", "q900": "q90", "q990": "q99"}


def _ticked(value: T, tick: Callable[[int], None], k: int) -> T:
    tick(k)
    return value


def fit_calibration(
    scorer: Any,
    batches: Iterable[tuple[torch.Tensor, list[str]]],
    target_fpr: float = 0.01,
    config_hash: str = "",
    model_digest: str = "",
    on_images: Callable[[int], None] | None = None,
) -> Calibration:
    """Fit both thresholds on batches of normal images (y in [−1, 1], ids).

    Stage 1 runs once per batch; the mask threshold is fitted on all stage-1 maps, then the same
    stage-1 maps give each image's mask for the full scoring pass. ``on_images(k)`` is called after
    each pass over a batch of k images (a progress hook: :func:`calibration_passes` per image).
    """
    tick = on_images or (lambda k: None)
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"expected 0 < target_fpr < 1, got {target_fpr}")
    batches = list(batches)
    if not batches:
        raise ValueError("expected held-out normal images to calibrate on, got none")
    mask_cfg = scorer.sampler.mask
    mask_threshold = None
    stage1: list[torch.Tensor | None] = [None] * len(batches)
    if mask_cfg.mode != "none":
        stage1 = [_ticked(scorer.stage1(y, ids), tick, len(ids)) for y, ids in batches]
    level_model = fit_level_model(scorer, batches, stage1, tick)
    if mask_cfg.mode != "none":
        values = torch.cat([scorer.mask_evidence(m, y, level_model).flatten()
                            for m, (y, _) in zip(stage1, batches, strict=True) if m is not None])
        mask_threshold = masking.quantile_threshold(values, mask_cfg.quantile)
    masked_with = resolve_mask_threshold(mask_cfg, None, mask_threshold)  # an explicit threshold still wins
    score_list = [
        _ticked(scorer.score(y, ids, mask_threshold=masked_with, stage1_map=s1, level_model=level_model).score,
                tick, len(ids))
        for (y, ids), s1 in zip(batches, stage1, strict=True)
    ]
    all_scores = torch.cat(score_list)
    if all_scores.numel() < MIN_CALIBRATION_IMAGES:
        warnings.warn(
            f"calibrating on {all_scores.numel()} held-out normal image(s): expected at least "
            f"{MIN_CALIBRATION_IMAGES} for thresholds that generalise; hold out more normals "
            "(holdout_fraction) or add normal training images",
            UserWarning,
            stacklevel=2,
        )
    return Calibration(
        mask_threshold=mask_threshold,
        score_threshold=float(torch.quantile(all_scores.double(), 1.0 - target_fpr)),
        mask_quantile=mask_cfg.quantile,
        target_fpr=target_fpr,
        n_images=int(all_scores.numel()),
        score_stats=score_summary(all_scores),
        config_hash=config_hash,
        model_digest=model_digest,
        method_hash=method_hash(scorer.prior, scorer.sampler, scorer.map_cfg, scorer.score_cfg, scorer.tiling),
        level_model=level_model,
    )


def calibration_passes(mask_mode: str, normalise: str) -> int:
    """Sampling passes per held-out image: stage 1 and the masked pass with a mask; with one stage,
    the scoring pass and, for relative maps, the pass that measures each image's level."""
    return 2 if mask_mode != "none" or normalise != "none" else 1


def fit_level_model(
    scorer: Any,
    batches: list[tuple[torch.Tensor, list[str]]],
    stage1: list[torch.Tensor | None],
    tick: Callable[[int], None] = lambda k: None,
) -> tuple[float, ...] | None:
    """σ̂(y) fitted on normal images (``maps.normalise="acquisition"``), else None.

    σᵢ is the median of image i's stage-1 map (with one stage, of its single map, sampled once more
    here), regressed log-linearly on its acquisition features φ(yᵢ) (core/maps.py).
    """
    if scorer.map_cfg.normalise == "none":
        return None
    levels = []
    for (y, ids), s1 in zip(batches, stage1, strict=True):
        if s1 is None:
            s1 = _ticked(scorer.run_stage(y, ids, scorer.sampler.stage2, "stage2").anomaly_map, tick, len(ids))
        levels.append(maps.image_level(s1))
    features = torch.cat([maps.acquisition_features(y) for y, _ in batches])
    return maps.fit_level_model(features, torch.cat(levels))
