"""Single-process workflows over a category: train a prior, calibrate it, evaluate a split.

No Ray here: this is what ``mdps demo`` runs in-process, what the quality benchmark calls, and
the reference the distributed jobs are checked against.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import UNet2DModel

from mdps_ray.api import Detector
from mdps_ray.config.method import MdpsConfig, upgrade_stored
from mdps_ray.config.overrides import validate
from mdps_ray.data.images import iter_batches, load_images, load_masks, mask_side, native_mask_size, read_mask
from mdps_ray.data.records import ImageRecord, detect_layout, list_records
from mdps_ray.data.splits import split_holdout
from mdps_ray.method.calibration import Calibration, fit_calibration, resolve_mask_threshold, set_threshold
from mdps_ray.method.positions import fit_position_priors
from mdps_ray.method.scorer import AnomalyScorer, StageOutput
from mdps_ray.method.training import PriorTrainer, fit_prior
from mdps_ray.metrics import functional as F
from mdps_ray.metrics.alignment import align
from mdps_ray.metrics.reconstruction import psnr, ssim
from mdps_ray.metrics.reduce import REDUCE_COLUMNS, RowLoaders, reduce_table
from mdps_ray.storage.checkpoints import save_calibration
from mdps_ray.storage.maps import read_map
from mdps_ray.storage.promotion import resolve_model
from mdps_ray.storage.runs import committed_run, read_results
from mdps_ray.storage.uris import read_json, write_json


def train_local(
    records: Sequence[ImageRecord],
    config: MdpsConfig,
    max_steps: int,
    max_seconds: float | None,
    device: torch.device,
    on_step: Callable[[int, float], None] | None = None,
) -> PriorTrainer:
    """Load the training images once and fit the prior in this process (one prior: see :func:`train_local_priors`
    for per-position ones)."""
    if config.tiling.prior == "per_position":
        raise ValueError("expected one shared prior for train_local, got tiling.prior=per_position; "
                         "use train_local_priors")
    return train_local_priors(records, config, max_steps, max_seconds, device, on_step)[0]


def train_local_priors(
    records: Sequence[ImageRecord],
    config: MdpsConfig,
    max_steps: int,
    max_seconds: float | None,
    device: torch.device,
    on_step: Callable[[int, float], None] | None = None,
) -> list[PriorTrainer]:
    """The model's priors fitted in this process: one, or one per tile position (each ``max_steps``, an
    equal share of ``max_seconds``); :func:`final_priors` gives what :func:`save_prior` takes."""
    images = load_images([r.uri for r in records], config.read_size).to(device)
    if config.tiling.prior == "per_position":
        return fit_position_priors(images, config, max_steps, max_seconds, on_step)
    return [fit_prior(images, config.prior, config.train, max_steps, max_seconds, on_step)]


def final_priors(trainers: Sequence[PriorTrainer], config: MdpsConfig) -> UNet2DModel | list[UNet2DModel]:
    """The UNet to save and score with, or the list of per-position UNets in tile order."""
    nets = [t.final_unet() for t in trainers]
    return nets if config.tiling.prior == "per_position" else nets[0]


def calibrate_local(
    scorer: AnomalyScorer,
    records: Sequence[ImageRecord],
    batch_size: int,
    device: torch.device,
    target_fpr: float = 0.01,
    config_hash: str = "",
    model_digest: str = "",
    storage_options: dict[str, Any] | None = None,
    on_images: Callable[[int], None] | None = None,
) -> Calibration:
    """Fit the thresholds on held-out normal images (read through ``storage_options``); ``on_images``
    is :func:`fit_calibration`'s progress hook."""
    size = scorer.read_size
    batches = [(y.to(device), ids) for y, ids, _ in iter_batches(records, size, batch_size, storage_options)]
    return fit_calibration(scorer, batches, target_fpr, config_hash, model_digest, on_images)


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
    size = scorer.read_size
    start = time.monotonic()
    batches = [(y.to(device), ids) for y, ids, _ in iter_batches(records, size, batch_size)]
    threshold: float | None = None
    stage1: list[StageOutput | None] = [None] * len(batches)
    if scorer.sampler.mask.mode == "transductive":
        stage1 = [scorer.stage1(y, ids) for y, ids in batches]
        transductive = set_threshold(scorer, batches, stage1)
        threshold = resolve_mask_threshold(scorer.sampler.mask, transductive, scorer.mask_threshold)
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


def calibrate_model(model: str, data: str, holdout_fraction: float = 0.1, target_fpr: float = 0.01,
                    overrides: Mapping[str, Any] | None = None,
                    storage_options: dict[str, Any] | None = None, device: str = "auto") -> Calibration:
    """Fit and write calibration.json on the held-out part of ``data``'s normal training images.

    The same rule as ``mdps train`` (:func:`~mdps_ray.data.splits.split_holdout`, for every layout):
    given the data a model was trained on, it calibrates on exactly the images training left out (in
    batches of 8, on ``device``: ``auto`` is cuda when this process sees a GPU).
    """
    model = resolve_model(model, storage_options)  # a promoted model: its current version is recalibrated
    where = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                         "cpu" if device == "auto" else device)
    det = Detector.load(model, device=where, storage_options=storage_options, overrides=overrides or {},
                        check_calibration=False)
    layout = detect_layout(data, storage_options)
    records = [r for r in list_records(data, layout, "train", storage_options) if r.label in (0, None)]
    _, records = split_holdout(records, holdout_fraction)
    cal = calibrate_local(det.scorer, records, 8, where, target_fpr=target_fpr,
                          config_hash=det.config.digest(), model_digest=det.model_digest)
    save_calibration(cal, model, storage_options)
    return cal


def evaluate_run(run_dir: str, storage_options: dict[str, Any] | None = None, write: bool = True) -> dict[str, Any]:
    """Metrics per category and overall for a committed run; rewrites its metrics.json."""
    paths = committed_run(run_dir, storage_options)
    record = read_json(paths.run_json, storage_options)
    cfg = validate(MdpsConfig, upgrade_stored(record["method"]), source=paths.run_json)
    rows = read_results(paths, storage_options, columns=REDUCE_COLUMNS)
    metrics = reduce_table(rows, cfg.read_size, cfg.maps.crop, stored_loaders(storage_options))
    if write:
        write_json(paths.metrics, metrics, storage_options)
    return metrics


def stored_loaders(storage_options: dict[str, Any] | None = None) -> RowLoaders:
    """The reduce's loaders bound to a store: maps as float16 .npy objects, masks as images."""
    so = dict(storage_options or {})
    return RowLoaders(anomaly_map=functools.partial(read_map, storage_options=so),
                      mask=functools.partial(read_mask, storage_options=so),
                      mask_side=functools.partial(mask_side, storage_options=so))
