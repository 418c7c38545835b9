"""Single-process workflows over a category: train a prior, calibrate it, evaluate a split.

No Ray here: this is what ``mdps demo`` runs in-process, what the quality benchmark calls, and
the reference the distributed jobs are checked against.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mdps_ray.calibration import Calibration, fit_calibration
from mdps_ray.config import MdpsConfig
from mdps_ray.core import masking
from mdps_ray.io.datasets import ImageRecord
from mdps_ray.io.loading import iter_batches, load_images, load_masks, native_mask_size
from mdps_ray.metrics import functional as F
from mdps_ray.metrics.alignment import align
from mdps_ray.metrics.reconstruction import psnr, ssim
from mdps_ray.scorer import AnomalyScorer
from mdps_ray.training import PriorTrainer, fit_prior


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


def train_local(
    records: Sequence[ImageRecord],
    config: MdpsConfig,
    max_steps: int,
    max_seconds: float | None,
    device: torch.device,
    on_step: Callable[[int, float], None] | None = None,
) -> PriorTrainer:
    """Load the training images once and fit the prior in this process."""
    images = load_images([r.uri for r in records], config.prior.image_size).to(device)
    return fit_prior(images, config.prior, config.train, max_steps, max_seconds, on_step)


def calibrate_local(
    scorer: AnomalyScorer,
    records: Sequence[ImageRecord],
    batch_size: int,
    device: torch.device,
    target_fpr: float = 0.01,
    config_hash: str = "",
    model_digest: str = "",
    storage_options: dict[str, Any] | None = None,
) -> Calibration:
    """Fit the thresholds on held-out normal images (read through ``storage_options``)."""
    size = scorer.prior.image_size
    batches = [(y.to(device), ids) for y, ids, _ in iter_batches(records, size, batch_size, storage_options)]
    return fit_calibration(scorer, batches, target_fpr, config_hash, model_digest)


@dataclass(frozen=True)
class Evaluation:
    """Per-image outputs of a scored split and its metrics."""

    records: list[ImageRecord]
    scores: torch.Tensor
    maps: torch.Tensor
    gt_masks: torch.Tensor
    metrics: dict[str, float]
    seconds_per_image: float


def evaluate_local(
    scorer: AnomalyScorer, records: Sequence[ImageRecord], batch_size: int, device: torch.device | None = None
) -> Evaluation:
    """Score every record and compute the metrics that its labels and masks allow.

    With the ``transductive`` mask mode this runs the official code's two passes: stage 1 over
    the whole set, the global min/max threshold, then stage 2.
    """
    device = device or torch.device("cpu")
    size = scorer.prior.image_size
    start = time.monotonic()
    batches = [(y.to(device), ids) for y, ids, _ in iter_batches(records, size, batch_size)]
    threshold, stage1 = None, [None] * len(batches)
    if scorer.sampler.mask.mode == "transductive":
        stage1 = [scorer.stage1(y, ids) for y, ids in batches]
        lo = min(float(m.min()) for m in stage1 if m is not None)
        hi = max(float(m.max()) for m in stage1 if m is not None)
        threshold = masking.transductive_threshold(lo, hi, scorer.sampler.mask.fraction)
    results = [scorer.score(y, ids, threshold, s1) for (y, ids), s1 in zip(batches, stage1, strict=True)]
    seconds = (time.monotonic() - start) / max(len(records), 1)
    scores = torch.cat([r.score for r in results]).cpu()
    amaps = torch.cat([r.anomaly_map for r in results])[:, 0].cpu()
    gt_size = native_mask_size(records) or size
    amaps, gt = align(amaps, load_masks(records, gt_size)[:, 0], size, scorer.map_cfg.crop)
    metrics = split_metrics(records, scores, amaps, gt)
    normal = [i for i, r in enumerate(records) if r.label == 0]
    if normal:
        y = torch.cat([b for b, _ in batches]).cpu()[normal]
        recon = torch.cat([r.reconstruction for r in results]).cpu()[normal]
        metrics["psnr_normal"] = float(psnr(recon, y).mean())
        metrics["ssim_normal"] = float(ssim(recon, y).mean())
    metrics["seconds_per_image"] = seconds
    return Evaluation(list(records), scores, amaps, gt, metrics, seconds)


def split_metrics(
    records: Sequence[ImageRecord], scores: torch.Tensor, amaps: torch.Tensor, gt: torch.Tensor
) -> dict[str, float]:
    """Image AUROC, AP, F1-max; pixel AUROC and AUPRO@0.3 when masks exist; counts."""
    labels = [r.label for r in records]
    out: dict[str, float] = {"n_images": float(len(records))}
    if any(v is None for v in labels) or len(set(labels)) < 2:
        return out
    out["n_anomalous"] = float(sum(v == 1 for v in labels))
    out["image_auroc"] = F.image_auroc(labels, scores)
    out["ap"] = F.average_precision(labels, scores)
    out["f1_max"] = F.f1_max(labels, scores)
    if bool(gt.any()):
        out["pixel_auroc"] = F.pixel_auroc(gt, amaps)
        out["aupro"] = F.aupro(gt, amaps)
    return out
