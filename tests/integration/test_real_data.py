"""Real images: a tiny prior trained for about a minute on MVTec AD bottle beats chance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mdps_ray.api import build_scorer
from mdps_ray.config.overrides import apply_overrides
from mdps_ray.config.presets import DEFAULT
from mdps_ray.data.records import list_mvtec
from mdps_ray.data.splits import split_holdout
from mdps_ray.workflows import calibrate_local, evaluate_local, train_local

pytestmark = [pytest.mark.slow, pytest.mark.data]


def test_tiny_prior_on_bottle_separates_defects_better_than_chance(bottle_root: Path) -> None:
    cfg = apply_overrides(DEFAULT, ["prior.image_size=32", "sampler.stage1.n_samples=1",
                                    "sampler.stage2.n_samples=1", "sampler.stage1.stride=40",
                                    "sampler.stage2.stride=40"])
    cpu = torch.device("cpu")
    train, holdout = split_holdout(list_mvtec(str(bottle_root), "train"), 0.1)
    trainer = train_local(train, cfg, max_steps=10**6, max_seconds=60, device=cpu)
    scorer = build_scorer(trainer.final_unet(), cfg, cpu)
    scorer.mask_threshold = calibrate_local(scorer, holdout, 16, cpu).mask_threshold
    test = list_mvtec(str(bottle_root), "test")
    ev = evaluate_local(scorer, test[::2], 16, cpu)  # every other image: 42 of 83, both classes
    assert ev.metrics["image_auroc"] > 0.6 and ev.metrics["pixel_auroc"] > 0.6
