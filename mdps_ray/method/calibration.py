"""Calibration on held-out normal images: the level model, the stage-1 mask threshold and the image threshold.

    level model     log σᵢ ≈ φ(yᵢ)·β, σᵢ the median of image i's first map        (maps.normalise)
    mask_threshold  Q_q( A₁/σ̂(y) values )                                        (q = sampler.mask.quantile)
    score_threshold s₍ₖ₎, the k-th smallest of n cross-fitted normal scores, k = ⌈(n + 1)(1 − α)⌉

The level model and the mask threshold stored are fitted on every held-out normal. The image threshold is not
taken from scores of those same images (that scores them low, and the threshold with them): the normals are
cut into folds (:func:`~mdps_ray.method.conformal.cross_folds`), and each fold is scored with a level model and
a mask threshold fitted on the other folds. For an exchangeable normal image x, P(s(x) > s₍ₖ₎) ≤ α: the
certified false-alarm rate (method/conformal.py). With n < 1/α − 1 no order statistic certifies α; the threshold
is then the largest score and certifies 1/(n + 1) (``certified_fpr``, with a warning naming how many normals α
needs). The n scores are stored, so every scored image gets its conformal p-value (1 + #{sᵢ ≥ s}) / (n + 1)
(:meth:`Calibration.p_values`).

Everything is fitted after training, stored as ``calibration.json`` next to the checkpoint, and applied unchanged at
scoring time: nothing is fitted on the images being scored (mask mode ``transductive`` excepted: there the mask
threshold is the scored set's, and calibration scores its normals with the calibration set's own).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import torch

from mdps_ray.config.method import MaskConfig, MdpsConfig, method_hash
from mdps_ray.core import maps, masking
from mdps_ray.core.acquisition import ACQUISITION_STATS, acquisition_stats
from mdps_ray.core.maps import LevelModel
from mdps_ray.core.scores import score_summary
from mdps_ray.method.conformal import conformal_threshold, cross_folds, fpr_bound, normals_needed
from mdps_ray.method.scorer import StageOutput

CALIBRATION_VERSION = 2  # 2: certified_fpr, the normal scores, the folds and the level features; 1 still read
MIN_CALIBRATION_IMAGES = 3  # fewer held-out normals than this give thresholds from one or two values
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
        score_stats: summary of the cross-fitted normal scores.
        level_model: σ̂(y) (None: raw maps, or an older file without one).
        certified_fpr: the rate ``score_threshold`` guarantees for an exchangeable normal image, on average over
            the held-out draw (None: older file).
        fpr_bound_90: the rate this threshold stays under with 90 % probability over that draw (None: older file).
        normal_scores: the n cross-fitted normal scores, ascending (the p-values' reference; empty: older file).
        folds: how many cross-fitting folds scored them (0: older file).
        normal_acquisition: per statistic of ``core.acquisition`` (brightness, contrast, sharpness), its value on
            each held-out normal, in image order (the nightly drift's reference; empty: older file).
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
    fpr_bound_90: float | None = None
    normal_scores: tuple[float, ...] = ()
    folds: int = 0
    normal_acquisition: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        finite = {"score_threshold": self.score_threshold, "target_fpr": self.target_fpr,
                  **({"mask_threshold": self.mask_threshold} if self.mask_threshold is not None else {})}
        for name, value in finite.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"expected a finite number for {name}, got {value!r}")
        if not 0.0 < self.target_fpr < 1.0:
            raise ValueError(f"expected 0 < target_fpr < 1, got {self.target_fpr}")
        if self.normal_scores and not self.normal_scores[0] <= self.score_threshold <= self.normal_scores[-1]:
            lo, hi = self.normal_scores[0], self.normal_scores[-1]
            raise ValueError(f"expected score_threshold within the normal scores it was taken from "
                             f"[{lo:.6g}, {hi:.6g}], got {self.score_threshold!r}")
        median = self.score_stats.get("q50")
        if not self.normal_scores and median is not None and self.score_threshold < median:
            raise ValueError(f"expected score_threshold at or above the median normal score {median:.6g} (a lower "
                             f"one flags most normal images), got {self.score_threshold!r}")
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
        data["normal_acquisition"] = {k: list(v) for k, v in self.normal_acquisition.items()}
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
        fields["normal_acquisition"] = {k: tuple(float(x) for x in v)
                                        for k, v in (fields.get("normal_acquisition") or {}).items()}
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
    """Fit the level model and the mask threshold on all held-out normals (y in [−1, 1], ids), and the image
    threshold on their cross-fitted scores (module docstring).

    Each image's first pass (stage 1, or the single stage) runs once; for each fold, the level model and the mask
    threshold are fitted on the other folds' first passes, and the fold's images are scored with them (their
    stage-1 passes reused for the mask; with mask mode ``transductive``, the whole set's min/max threshold).
    ``on_images(k)`` is called after each pass over k images (a progress hook: :func:`calibration_passes` in all).
    """
    tick = on_images or (lambda k: None)
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"expected 0 < target_fpr < 1, got {target_fpr}")
    batches = list(batches)
    if not batches:
        raise ValueError("expected held-out normal images to calibrate on, got none")
    mask_cfg, normalise = scorer.sampler.mask, scorer.map_cfg.normalise
    ids = [i for _, batch_ids in batches for i in batch_ids]
    fitting = needs_fit(mask_cfg, normalise)
    first: list[Any] = [None] * len(batches)  # StageOutput per batch, None where nothing needs it
    if fitting or mask_cfg.mode != "none":
        first = [_ticked(first_pass(scorer, y, batch_ids), tick, len(batch_ids)) for y, batch_ids in batches]
    level_model, mask_threshold = _fit_part(scorer, batches, first, set(ids))
    transductive = set_threshold(scorer, batches, first, level_model)
    folds = cross_folds(ids) if fitting else [set(ids)]
    scores = []
    for held in folds:
        others = set(ids) - held or held  # one image alone is its own fit (warned below)
        fold_level, fold_mask = (level_model, mask_threshold) if not fitting else _fit_part(
            scorer, batches, first, others)
        masked_with = resolve_mask_threshold(mask_cfg, transductive, fold_mask)  # an explicit threshold still wins
        for y, batch_ids, s1 in _subset(batches, first, held):
            stage1 = s1 if mask_cfg.mode != "none" else None
            out = scorer.score(y, batch_ids, mask_threshold=masked_with, stage1=stage1, level_model=fold_level)
            scores.append(_ticked(out.score.detach().double().cpu(), tick, len(batch_ids)))
    normal = torch.cat(scores)
    _warn_if_few(len(set(ids)), normal.numel(), target_fpr)
    threshold, certified = conformal_threshold(normal, target_fpr)
    return Calibration(
        mask_threshold=mask_threshold,
        score_threshold=threshold,
        mask_quantile=mask_cfg.quantile,
        target_fpr=target_fpr,
        n_images=len(set(ids)),
        score_stats=score_summary(normal),
        config_hash=config_hash,
        model_digest=model_digest,
        method_hash=method_hash(scorer.prior, scorer.sampler, scorer.map_cfg, scorer.score_cfg, scorer.tiling),
        level_model=level_model,
        certified_fpr=certified,
        fpr_bound_90=fpr_bound(normal.numel(), target_fpr, 0.9),
        normal_scores=tuple(float(v) for v in normal.sort().values),
        folds=len(folds),
        normal_acquisition=normal_acquisition(batches),
    )


def normal_acquisition(batches: list[tuple[torch.Tensor, list[str]]]) -> dict[str, tuple[float, ...]]:
    """The acquisition statistics (``core.acquisition``) of every calibration image, one tuple per statistic."""
    stats = torch.cat([acquisition_stats(y).cpu() for y, _ in batches])
    return {name: tuple(float(v) for v in stats[:, j]) for j, name in enumerate(ACQUISITION_STATS)}


def _fit_part(scorer: Any, batches: list[tuple[torch.Tensor, list[str]]], first: list[Any],
              keep: set[str]) -> tuple[LevelModel | None, float | None]:
    """The level model and the calibrated mask threshold fitted on the images ``keep`` names."""
    part = _subset(batches, first, keep)
    if not part or part[0][2] is None:
        return None, None
    level_model = fit_level_model(scorer, [(y, i) for y, i, _ in part], [f for _, _, f in part])
    if scorer.sampler.mask.mode != "calibrated":
        return level_model, None
    values = torch.cat([scorer.mask_evidence(f, y, level_model).flatten() for y, _, f in part])
    return level_model, masking.quantile_threshold(values, scorer.sampler.mask.quantile)


def _subset(batches: list[tuple[torch.Tensor, list[str]]], first: list[Any],
            keep: set[str]) -> list[tuple[torch.Tensor, list[str], Any]]:
    """(y, ids, first pass) of each batch restricted to the ids in ``keep`` (batches left empty are dropped)."""
    out = []
    for (y, ids), f in zip(batches, first, strict=True):
        rows = [k for k, i in enumerate(ids) if i in keep]
        if not rows:
            continue
        if len(rows) == len(ids):
            out.append((y, ids, f))
            continue
        sub = None if f is None else StageOutput(f.anomaly_map[rows], f.reconstruction[rows])
        out.append((y[rows], [ids[k] for k in rows], sub))
    return out


def set_threshold(scorer: Any, batches: list[tuple[torch.Tensor, list[str]]], first: list[Any],
                  level_model: LevelModel | None = None) -> float | None:
    """Mask mode ``transductive``: the official rule's threshold, lo + f·(hi − lo) over this set's stage-1
    evidence (``first``: each batch's stage-1 pass), else None."""
    mask = scorer.sampler.mask
    if mask.mode != "transductive":
        return None
    evidence = [scorer.mask_evidence(f, y, level_model) for f, (y, _) in zip(first, batches, strict=True)]
    lo, hi = min(float(e.min()) for e in evidence), max(float(e.max()) for e in evidence)
    return masking.transductive_threshold(lo, hi, mask.fraction)


def _warn_if_few(n_images: int, n_scores: int, alpha: float) -> None:
    """One warning when the held-out normals are too few for thresholds that generalise or certify α."""
    need = normals_needed(alpha)
    if n_images < MIN_CALIBRATION_IMAGES:
        warnings.warn(f"calibrating on {n_images} held-out normal image(s): expected at least "
                      f"{MIN_CALIBRATION_IMAGES} for thresholds that generalise; hold out more normals "
                      "(holdout_fraction) or add normal training images", UserWarning, stacklevel=3)
    elif n_scores < need:
        warnings.warn(f"the image threshold certifies a false-alarm rate of 1/{n_scores + 1} = "
                      f"{1 / (n_scores + 1):.3g}, not the target {alpha:g}: expected at least {need} held-out "
                      f"normals for it, got {n_scores}; hold out more normals (holdout_fraction) or add normal "
                      "training images", UserWarning, stacklevel=3)


def needs_fit(mask: MaskConfig, normalise: str) -> bool:
    """Whether calibration fits anything besides the image threshold (a level model or a mask threshold)."""
    return normalise != "none" or (mask.mode == "calibrated" and mask.threshold is None)


def calibration_passes(mask: MaskConfig, normalise: str, n_images: int) -> int:
    """Sampling passes :func:`fit_calibration` makes over n held-out images: each image's first pass when anything
    is fitted or masked, then its scoring pass (which reuses stage 1)."""
    return n_images * (2 if needs_fit(mask, normalise) or mask.mode != "none" else 1)


def first_pass(scorer: Any, y: torch.Tensor, image_ids: list[str]) -> StageOutput:
    """An image's first pass (its raw map and posterior mean): stage 1, or with a single stage its one stage."""
    if scorer.sampler.mask.mode != "none":
        return scorer.stage1(y, image_ids)
    return scorer.run_stage(y, image_ids, scorer.sampler.stage2, "stage2")


def fit_level_model(scorer: Any, batches: list[tuple[torch.Tensor, list[str]]],
                    first: list[StageOutput]) -> LevelModel | None:
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
