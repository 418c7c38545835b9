"""Calibration on held-out normal images: the stage-1 mask threshold, the level model and the image threshold.

The held-out normals are split in two by a hash of each image id (:func:`split_calibration`):

    fit part        level model     log σᵢ ≈ φ(yᵢ)·β, σᵢ the median of image i's first map   (maps.normalise)
                    mask_threshold  Q_q( A₁/σ̂(y) values )                                   (q = sampler.mask.quantile)
    conformal part  score_threshold s₍ₖ₎, the k-th smallest of its n image scores, k = ⌈(n + 1)(1 − α)⌉

so the image threshold is not taken from the images the level and the mask were fitted on (which scores them
low and the threshold with them). For an exchangeable normal image x, P(s(x) > s₍ₖ₎) ≤ 1 − k/(n + 1) ≤ α: the
certified false-alarm rate. With n < 1/α − 1 no order statistic certifies α; the threshold is then the largest
score and certifies 1/(n + 1) (``certified_fpr``, with a warning naming how many normals α needs). The n scores
are stored, so every scored image gets its conformal p-value (1 + #{sᵢ ≥ s}) / (n + 1) (:meth:`Calibration.p_values`).

Everything is fitted after training, stored as ``calibration.json`` next to the checkpoint, and applied unchanged at
scoring time: nothing is fitted on the images being scored (mask mode ``transductive`` excepted: there the mask
threshold is the scored set's, and calibration scores its normals with the calibration set's own).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import torch

from mdps_ray.config.method import MaskConfig, MdpsConfig, method_hash
from mdps_ray.core import maps, masking
from mdps_ray.core.maps import LevelModel
from mdps_ray.core.scores import score_summary

CALIBRATION_VERSION = 2  # 2: certified_fpr, the conformal scores, the split and level features; 1 still read
MIN_CALIBRATION_IMAGES = 3  # fewer held-out normals than this give thresholds from one or two values
FIT_SHARE = 1 / 3  # of the held-out normals: fit the level model and the mask threshold; the rest: the threshold
T = TypeVar("T")


@dataclass(frozen=True)
class Calibration:
    """Thresholds and the statistics they came from.

    Attributes:
        mask_threshold: the stage-1 mask threshold τ (None: single stage, explicit or transductive).
        score_threshold: the image threshold; an image is anomalous when its score is above it.
        mask_quantile: the quantile τ was taken at.
        target_fpr: α, the false-alarm rate asked for.
        n_images: held-out normals used in all.
        score_stats: summary of the conformal part's scores.
        level_model: σ̂(y) (None: raw maps, or an older file without one).
        certified_fpr: the rate ``score_threshold`` guarantees for an exchangeable normal image (None: older file).
        normal_scores: the conformal part's n scores, ascending (the p-values' reference; empty: older file).
        n_fit: how many of the held-out normals fitted the level model and the mask threshold.
    """

    mask_threshold: float | None
    score_threshold: float
    mask_quantile: float
    target_fpr: float
    n_images: int
    score_stats: dict[str, float] = field(default_factory=dict)
    config_hash: str = ""
    model_digest: str = ""
    method_hash: str = ""  # prior/sampler/maps/score the thresholds were fitted with; "" in older files
    level_model: LevelModel | None = None
    certified_fpr: float | None = None
    normal_scores: tuple[float, ...] = ()
    n_fit: int = 0

    def __post_init__(self) -> None:
        finite = {"score_threshold": self.score_threshold, "target_fpr": self.target_fpr,
                  **({"mask_threshold": self.mask_threshold} if self.mask_threshold is not None else {})}
        for name, value in finite.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"expected a finite number for {name}, got {value!r}")
        if not 0.0 < self.target_fpr < 1.0:
            raise ValueError(f"expected 0 < target_fpr < 1, got {self.target_fpr}")
        if self.level_model is not None and not all(
                math.isfinite(v) for v in (*self.level_model.beta, self.level_model.lo, self.level_model.hi)):
            raise ValueError(f"expected finite level_model coefficients, got {self.level_model}")

    @property
    def n_conformal(self) -> int:
        """How many normal scores the image threshold (and the p-values) came from."""
        return len(self.normal_scores)

    def p_values(self, scores: torch.Tensor) -> torch.Tensor | None:
        """Conformal p-values (1 + #{normal scores ≥ s}) / (n + 1) of image scores (B,) → (B,) float64, or
        None for a calibration without stored normal scores. Uniform for normal images; small for anomalies."""
        if not self.normal_scores:
            return None
        ref = torch.tensor(self.normal_scores, dtype=torch.float64)
        s = scores.detach().double().cpu()
        at_least = ref.numel() - torch.searchsorted(ref, s, side="left")
        return (1.0 + at_least.double()) / (ref.numel() + 1.0)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.level_model is not None:
            data["level_model"] = {"beta": list(self.level_model.beta), "lo": self.level_model.lo,
                                   "hi": self.level_model.hi, "features": self.level_model.features}
        data["normal_scores"] = list(self.normal_scores)
        return {"version": CALIBRATION_VERSION, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        version = data.get("version")
        if version not in (1, CALIBRATION_VERSION):
            raise ValueError(f"expected calibration.json version 1 or {CALIBRATION_VERSION}, got {version!r}")
        fields = {k: v for k, v in data.items() if k != "version"}
        stats = fields.get("score_stats") or {}
        fields["score_stats"] = {_OLD_SUMMARY_KEYS.get(k, k): v for k, v in stats.items()}
        fields["level_model"] = level_model_from_json(fields.get("level_model"))
        fields["normal_scores"] = tuple(float(v) for v in fields.get("normal_scores") or ())
        return cls(**fields)


def level_model_from_json(data: Any) -> LevelModel | None:
    """A stored level model: a dict (version 2), or the list (β₀, β₁, β₂, σ_min, σ_max) of version 1, whose
    features were measured over every pixel (``"observation"``)."""
    if data is None:
        return None
    if isinstance(data, dict):
        b0, b1, b2 = (float(v) for v in data["beta"])
        return LevelModel((b0, b1, b2), float(data["lo"]), float(data["hi"]), data.get("features", "ordinary"))
    b0, b1, b2, lo, hi = (float(v) for v in data)
    return LevelModel((b0, b1, b2), lo, hi, "observation")


def conformal_threshold(scores: torch.Tensor, alpha: float) -> tuple[float, float]:
    """The image threshold and the false-alarm rate it certifies, from n normal scores (N,).

    k = ⌈(n + 1)(1 − α)⌉; threshold = the k-th smallest score, certifying α (P(s > s₍ₖ₎) ≤ 1 − k/(n + 1) ≤ α for
    an exchangeable normal image). When k > n the largest score is the threshold and it certifies 1/(n + 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"expected 0 < target_fpr < 1, got {alpha}")
    s = scores.detach().double().flatten().cpu().sort().values
    n = s.numel()
    if n == 0:
        raise ValueError("expected normal scores to take the image threshold from, got none")
    if not bool(torch.isfinite(s).all()):
        raise ValueError(f"expected finite normal scores, got {int((~torch.isfinite(s)).sum())} NaN or infinite "
                         "of {n}: the prior or its maps are broken; retrain")
    k = math.ceil((n + 1) * (1.0 - alpha) - 1e-9)
    if k <= n:
        return float(s[k - 1]), alpha
    return float(s[-1]), 1.0 / (n + 1)


def normals_needed(alpha: float) -> int:
    """The fewest conformal normal scores that certify α: n with ⌈(n + 1)(1 − α)⌉ ≤ n."""
    n = 1
    while math.ceil((n + 1) * (1.0 - alpha) - 1e-9) > n:
        n += 1
    return n


def split_key(image_id: str) -> float:
    """A uniform number in [0, 1) fixed by an image id (salted apart from the holdout's key)."""
    return int(hashlib.sha256(f"calibration-fit|{image_id}".encode()).hexdigest()[:8], 16) / 16**8


def split_calibration(image_ids: Sequence[str]) -> tuple[set[str], set[str]]:
    """(fit ids, conformal ids): the ids whose :func:`split_key` is below ``FIT_SHARE`` fit; at least one of each
    when there are two or more ids (one id serves both, with the warning that it calibrates nothing)."""
    ids = list(dict.fromkeys(image_ids))
    if len(ids) < 2:
        return set(ids), set(ids)
    ranked = sorted(ids, key=split_key)
    fit = {i for i in ranked if split_key(i) < FIT_SHARE}
    if not fit:
        fit = {ranked[0]}
    if len(fit) == len(ids):
        fit.discard(ranked[-1])
    return fit, set(ids) - fit


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
    """Fit the level model, the mask threshold and the image threshold on batches of normal images (y in
    [−1, 1], ids), each on its part of them (module docstring).

    The fit part runs its first stage once (the level model and the mask threshold need nothing more); the
    conformal part is scored as any image is, its stage-1 maps reused for the mask (with mask mode
    ``transductive``, the conformal part's own min/max threshold). ``on_images(k)`` is called after each pass
    over k images (a progress hook: :func:`calibration_passes` in all).
    """
    tick = on_images or (lambda k: None)
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"expected 0 < target_fpr < 1, got {target_fpr}")
    batches = list(batches)
    if not batches:
        raise ValueError("expected held-out normal images to calibrate on, got none")
    mask_cfg, normalise = scorer.sampler.mask, scorer.map_cfg.normalise
    ids = [i for _, batch_ids in batches for i in batch_ids]
    fit_ids, conformal_ids = split_calibration(ids) if needs_fit(mask_cfg, normalise) else (set(), set(ids))
    fit_part, conformal_part = _select(batches, fit_ids), _select(batches, conformal_ids)
    first = [_ticked(first_pass(scorer, y, batch_ids), tick, len(batch_ids)) for y, batch_ids in fit_part]
    level_model = fit_level_model(scorer, fit_part, first)
    mask_threshold = None
    if mask_cfg.mode == "calibrated" and fit_part:
        values = torch.cat([scorer.mask_evidence(m, y, level_model).flatten()
                            for m, (y, _) in zip(first, fit_part, strict=True)])
        mask_threshold = masking.quantile_threshold(values, mask_cfg.quantile)
    stage1: list[Any] = [None] * len(conformal_part)  # StageOutput, or None with a single stage
    if mask_cfg.mode != "none":
        stage1 = [_ticked(scorer.stage1(y, batch_ids), tick, len(batch_ids)) for y, batch_ids in conformal_part]
    masked_with = resolve_mask_threshold(mask_cfg, _transductive(scorer, conformal_part, stage1, level_model),
                                         mask_threshold)  # an explicit threshold still wins
    scores = torch.cat([
        _ticked(scorer.score(y, batch_ids, mask_threshold=masked_with, stage1=s1, level_model=level_model).score,
                tick, len(batch_ids))
        for (y, batch_ids), s1 in zip(conformal_part, stage1, strict=True)
    ]).detach().double().cpu()
    _warn_if_few(len(ids), scores.numel(), target_fpr)
    threshold, certified = conformal_threshold(scores, target_fpr)
    return Calibration(
        mask_threshold=mask_threshold,
        score_threshold=threshold,
        mask_quantile=mask_cfg.quantile,
        target_fpr=target_fpr,
        n_images=len(set(ids)),
        score_stats=score_summary(scores),
        config_hash=config_hash,
        model_digest=model_digest,
        method_hash=method_hash(scorer.prior, scorer.sampler, scorer.map_cfg, scorer.score_cfg, scorer.tiling),
        level_model=level_model,
        certified_fpr=certified,
        normal_scores=tuple(float(v) for v in scores.sort().values),
        n_fit=len(fit_ids),
    )


def _select(batches: list[tuple[torch.Tensor, list[str]]], keep: set[str]) -> list[tuple[torch.Tensor, list[str]]]:
    """The rows of each batch whose id is in ``keep`` (batches left empty are dropped)."""
    out = []
    for y, ids in batches:
        rows = [k for k, i in enumerate(ids) if i in keep]
        if rows:
            out.append((y[rows] if len(rows) < len(ids) else y, [ids[k] for k in rows]))
    return out


def _transductive(scorer: Any, batches: list[tuple[torch.Tensor, list[str]]], stage1: list[Any],
                  level_model: LevelModel | None) -> float | None:
    """Mask mode ``transductive``: the official rule's threshold over this set's stage-1 evidence, else None."""
    mask = scorer.sampler.mask
    if mask.mode != "transductive" or not batches:
        return None
    evidence = [scorer.mask_evidence(m, y, level_model) for m, (y, _) in zip(stage1, batches, strict=True)
                if m is not None]
    lo, hi = min(float(e.min()) for e in evidence), max(float(e.max()) for e in evidence)
    return masking.transductive_threshold(lo, hi, mask.fraction)


def _warn_if_few(n_images: int, n_conformal: int, alpha: float) -> None:
    """One warning when the held-out normals are too few for thresholds that generalise or certify α."""
    need = normals_needed(alpha)
    if n_images < MIN_CALIBRATION_IMAGES:
        warnings.warn(f"calibrating on {n_images} held-out normal image(s): expected at least "
                      f"{MIN_CALIBRATION_IMAGES} for thresholds that generalise; hold out more normals "
                      "(holdout_fraction) or add normal training images", UserWarning, stacklevel=3)
    elif n_conformal < need:
        warnings.warn(f"the image threshold certifies a false-alarm rate of 1/{n_conformal + 1} = "
                      f"{1 / (n_conformal + 1):.3g}, not the target {alpha:g}: expected at least {need} normal "
                      f"scores for it, got {n_conformal} (of {n_images} held-out normals); hold out more normals "
                      "(holdout_fraction) or add normal training images", UserWarning, stacklevel=3)


def needs_fit(mask: MaskConfig, normalise: str) -> bool:
    """Whether calibration fits anything besides the image threshold (a level model or a mask threshold)."""
    return normalise != "none" or (mask.mode == "calibrated" and mask.threshold is None)


def calibration_passes(mask: MaskConfig, normalise: str, image_ids: Sequence[str]) -> int:
    """Sampling passes :func:`fit_calibration` makes over these held-out images: one per fit image, and per
    conformal image two with a mask (stage 1, the masked pass) or one with a single stage."""
    ids = list(image_ids)
    fit, conformal = split_calibration(ids) if needs_fit(mask, normalise) else (set(), set(ids))
    return len(fit) + (2 if mask.mode != "none" else 1) * len(conformal)


def first_pass(scorer: Any, y: torch.Tensor, image_ids: list[str]) -> Any:
    """An image's first pass (a StageOutput: raw map and posterior mean): stage 1, or with a single stage its one."""
    if scorer.sampler.mask.mode != "none":
        return scorer.stage1(y, image_ids)
    return scorer.run_stage(y, image_ids, scorer.sampler.stage2, "stage2")


def fit_level_model(
    scorer: Any,
    batches: list[tuple[torch.Tensor, list[str]]],
    first: list[Any],
) -> LevelModel | None:
    """σ̂(y) fitted on normal images (``maps.normalise="acquisition"``), else None.

    σᵢ is the median of image i's first map, regressed log-linearly on its acquisition features φ(yᵢ) measured
    on the pixels that map finds ordinary, the posterior mean standing in for the others (core/maps.py).
    """
    if scorer.map_cfg.normalise == "none" or not batches:
        return None
    levels = torch.cat([maps.image_level(f.anomaly_map) for f in first])
    features = torch.cat([maps.acquisition_features(y, f.anomaly_map, f.reconstruction, "ordinary")
                          for f, (y, _) in zip(first, batches, strict=True)])
    return maps.fit_level_model(features, levels, "ordinary")
