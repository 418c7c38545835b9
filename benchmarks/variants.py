"""Ablation variants of the method (config overrides) and the trivial mean-image baseline."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from mdps_ray.api import build_scorer
from mdps_ray.config.method import MdpsConfig
from mdps_ray.core import maps as core_maps
from mdps_ray.core import scores
from mdps_ray.data.images import iter_batches, load_images, load_masks, native_mask_size
from mdps_ray.data.records import ImageRecord
from mdps_ray.metrics.alignment import align
from mdps_ray.models.prior import build_unet
from mdps_ray.workflows import Evaluation, split_metrics

VARIANTS: dict[str, list[str]] = {
    "default": [],
    "raw_maps": ["maps.normalise=none"],
    "relative_w1": ["maps.stage1_weight=1.0"],
    "relative_w0": ["maps.stage1_weight=0"],
    "stage1_only": ["sampler.mask.mode=none"],
    "stage2_map_only": ["maps.stage1_weight=0"],
    "no_guidance": ["sampler.mask.mode=none", "sampler.stage2.rho=0"],
    "pixel_only": ["maps.backbone=none"],
    "lpips_alex": ["maps.backbone=lpips-alex"],
    "perceptual_only": ["maps.backbone=lpips-alex", "maps.pixel_weight=0"],
    "n1": ["sampler.stage1.n_samples=1", "sampler.stage2.n_samples=1"],
    "n2": ["sampler.stage1.n_samples=2", "sampler.stage2.n_samples=2"],
    "n4": ["sampler.stage1.n_samples=4", "sampler.stage2.n_samples=4"],
    "n8": ["sampler.stage1.n_samples=8", "sampler.stage2.n_samples=8"],
    "transductive": ["sampler.mask.mode=transductive"],
    "lpips_vgg": ["maps.backbone=lpips-vgg"],
    "random_trunk": ["maps.backbone=random"],
    # for a prior trained with tiling on (random crops): the same prior without tiles, and other tilings
    "untiled": ["tiling.enabled=false"],
    "tiles_smooth": ["tiling.seams=smooth"],
    "tiles_half_overlap": ["tiling.stride=32"],
    "tiles_read128": ["tiling.read_size=128"],
}

DESCRIPTIONS: dict[str, str] = {
    "default": "the configuration under test (two-stage MDPS, calibrated mask, its maps)",
    "raw_maps": "maps not divided by the expected level of the image's acquisition (maps.normalise=none, the paper's)",
    "relative_w1": "relative maps with final map (A2 + 1.0 x A1) / sigma(y)",
    "relative_w0": "relative maps with final map A2 / sigma(y)",
    "stage1_only": "unmasked guided sampling only, one stage",
    "stage2_map_only": "final map = stage-2 map alone (the paper's; maps.stage1_weight=0)",
    "no_guidance": "one stage, rho = 0: plain DDIM noise-and-denoise",
    "pixel_only": "pixel (L1) maps only",
    "lpips_alex": "L1 + LPIPS-alex maps",
    "perceptual_only": "LPIPS-alex maps only",
    "n1": "1 posterior sample per stage",
    "n2": "2 posterior samples per stage",
    "n4": "4 posterior samples per stage",
    "n8": "8 posterior samples per stage",
    "transductive": "the paper's test-set min/max mask threshold",
    "lpips_vgg": "L1 + LPIPS-vgg maps",
    "random_trunk": "L1 + LPIPS maps with a random (untrained) trunk",
    "baseline": "trivial: the mean normal training image as the reconstruction, same maps",
    "untiled": "a tile prior applied to the whole image squeezed to its side (no tiles)",
    "tiles_smooth": "tiles stitched with raised-cosine seam weights",
    "tiles_half_overlap": "tiles at stride 32 (50 % overlap)",
    "tiles_read128": "tiles of the image read at 128 px",
}


def baseline_evaluation(
    train_records: Sequence[ImageRecord],
    test_records: Sequence[ImageRecord],
    config: MdpsConfig,
    device: torch.device,
    batch_size: int = 8,
) -> Evaluation:
    """The mean normal training image as every image's "reconstruction", with the same maps."""
    size = config.read_size
    mean_image = load_images([r.uri for r in train_records], size).mean(dim=0, keepdim=True).to(device)
    shared = config.model_copy(update={"tiling": config.tiling.model_copy(update={"prior": "shared"})})
    scorer = build_scorer(build_unet(config.prior), shared, device)  # for its difference map only: no prior runs
    start = time.monotonic()
    score_list, map_list = [], []
    with torch.no_grad():
        for y, _, _ in iter_batches(test_records, size, batch_size):
            y = y.to(device)
            amap = scorer.difference_map(mean_image.expand_as(y), y, 1)
            if config.maps.crop is not None:
                amap = core_maps.center_crop(amap, config.maps.crop)
            score_list.append(scores.image_score(amap, config.score.method, config.score.k, config.score.fraction))
            map_list.append(amap[:, 0])
    seconds = (time.monotonic() - start) / max(len(test_records), 1)
    s, m = torch.cat(score_list).cpu(), torch.cat(map_list).cpu()
    gt_size = native_mask_size(test_records) or size
    m, gt = align(m, load_masks(test_records, gt_size)[:, 0], size, config.maps.crop)
    metrics = split_metrics(test_records, s, m, gt)
    metrics["seconds_per_image"] = seconds
    return Evaluation(list(test_records), s, m, gt, metrics, seconds)
