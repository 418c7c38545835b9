"""One threshold story: which mask threshold a scorer uses, the image decision, the score summary."""

from __future__ import annotations

import json

import pytest
import torch

from mdps_ray.config.method import MapConfig, MaskConfig
from mdps_ray.core.scores import score_summary
from mdps_ray.method.calibration import (
    Calibration,
    calibration_passes,
    fit_calibration,
    is_anomalous,
    resolve_mask_threshold,
)
from tests.helpers.models import make_scorer, tiny_sampler


@pytest.mark.parametrize(
    ("mask", "transductive", "calibrated", "expected"),
    [
        (MaskConfig(mode="calibrated", threshold=0.3), 0.2, 0.1, 0.3),  # explicit wins
        (MaskConfig(mode="transductive"), 0.2, 0.1, 0.2),  # transductive over calibrated
        (MaskConfig(mode="calibrated"), 0.2, 0.1, 0.1),  # a calibrated run ignores a set's range
        (MaskConfig(mode="calibrated"), None, None, None),
        (MaskConfig(mode="none", threshold=0.3), 0.2, 0.1, None),  # single stage: no mask at all
    ],
)
def test_mask_threshold_precedence(mask: MaskConfig, transductive: float | None, calibrated: float | None,
                                   expected: float | None) -> None:
    assert resolve_mask_threshold(mask, transductive, calibrated) == expected


def test_the_image_decision_is_strictly_above_the_threshold() -> None:
    assert is_anomalous(torch.tensor([0.1, 0.5, 0.9]), 0.5).tolist() == [False, False, True]


def test_calibration_stores_the_one_score_summary(tiny_unet: torch.nn.Module, images16: torch.Tensor) -> None:
    scorer = make_scorer(tiny_unet, tiny_sampler(mask=MaskConfig(mode="calibrated")))
    ticks: list[int] = []
    cal = fit_calibration(scorer, [(images16, ["a", "b", "c", "d"])], target_fpr=0.25, on_images=ticks.append)
    assert ticks == [4, 4]  # progress: stage 1, then the masked pass, per batch
    assert cal.level_model is not None and len(cal.level_model) == 5  # maps.normalise=acquisition, the default
    again = scorer.score(images16, ["a", "b", "c", "d"], mask_threshold=cal.mask_threshold,
                         level_model=cal.level_model).score
    assert cal.score_stats == pytest.approx(score_summary(again))
    assert Calibration.from_json(json.loads(json.dumps(cal.to_json()))) == cal  # the level model survives JSON
    assert set(cal.score_stats) == {"n", "mean", "std", "q50", "q90", "q99"}


def test_an_older_calibration_file_reads_with_the_current_keys() -> None:
    cal = Calibration(0.1, 0.2, 0.995, 0.01, 4, {"mean": 1.0, "std": 0.5, "q50": 1.0}).to_json()
    cal["score_stats"] = {"mean": 1.0, "std": 0.5, "q500": 0.9, "q900": 1.5, "q990": 2.0}
    assert Calibration.from_json(cal).score_stats == {"mean": 1.0, "std": 0.5, "q50": 0.9, "q90": 1.5, "q99": 2.0}


def test_calibrating_on_too_few_normals_warns(tiny_unet: torch.nn.Module, images16: torch.Tensor) -> None:
    scorer = make_scorer(tiny_unet, tiny_sampler(mask=MaskConfig(mode="calibrated")))
    with pytest.warns(UserWarning, match="calibrating on 1 held-out normal image"):
        fit_calibration(scorer, [(images16[:1], ["a"])], target_fpr=0.25)


@pytest.mark.parametrize("normalise", ["acquisition", "none"])
def test_one_stage_calibration_counts_the_level_pass_it_makes(tiny_unet: torch.nn.Module, images16: torch.Tensor,
                                                              normalise: str) -> None:
    maps = MapConfig(backbone="none", normalise=normalise)  # type: ignore[arg-type]
    scorer = make_scorer(tiny_unet, tiny_sampler(mask=MaskConfig(mode="none")), maps)
    ticks: list[int] = []
    cal = fit_calibration(scorer, [(images16, ["a", "b", "c", "d"])], target_fpr=0.25, on_images=ticks.append)
    assert len(ticks) == calibration_passes("none", normalise) == (2 if normalise == "acquisition" else 1)
    assert (cal.level_model is not None) == (normalise == "acquisition") and cal.mask_threshold is None
