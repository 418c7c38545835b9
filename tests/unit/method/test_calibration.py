"""One threshold story: which mask threshold a scorer uses, the image decision, the score summary."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mdps_ray.config.method import MapConfig, MaskConfig
from mdps_ray.core.maps import LevelModel
from mdps_ray.core.masking import quantile_threshold
from mdps_ray.core.scores import score_summary
from mdps_ray.method.calibration import (
    Calibration,
    calibration_passes,
    fit_calibration,
    fit_level_model,
    is_anomalous,
    resolve_mask_threshold,
)
from mdps_ray.method.conformal import conformal_threshold, cross_folds, fpr_bound, normals_needed
from mdps_ray.method.scorer import StageOutput
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


IDS8 = [f"img{i}" for i in range(8)]


def test_calibration_takes_the_threshold_from_cross_fitted_normal_scores(
        tiny_unet: torch.nn.Module, images16: torch.Tensor) -> None:
    """Each fold is scored with a level model and a mask threshold fitted on the other folds: the threshold is
    not taken from the images the level and the mask were fitted on."""
    scorer = make_scorer(tiny_unet, tiny_sampler(mask=MaskConfig(mode="calibrated")))
    y = torch.cat([images16, images16.flip(-1)])
    ticks: list[int] = []
    cal = fit_calibration(scorer, [(y[:5], IDS8[:5]), (y[5:], IDS8[5:])], target_fpr=0.25, on_images=ticks.append)
    folds = cross_folds(IDS8)
    assert len(folds) == cal.folds == 5 and set().union(*folds) == set(IDS8) and sum(map(len, folds)) == 8
    assert cal.n_images == cal.n_conformal == 8
    # progress: stage 1 once per image, then its masked pass
    assert sum(ticks) == calibration_passes(scorer.sampler.mask, "acquisition", 8) == 16
    assert cal.level_model is not None and cal.level_model.features == "ordinary"
    # by hand: fit on the other folds, score the fold
    first = scorer.stage1(y, IDS8)
    expected = []
    for held in folds:
        rows = [i for i, name in enumerate(IDS8) if name not in held]
        part = StageOutput(first.anomaly_map[rows], first.reconstruction[rows])
        level = fit_level_model(scorer, [(y[rows], [IDS8[i] for i in rows])], [part])
        tau = quantile_threshold(scorer.mask_evidence(part, y[rows], level), scorer.sampler.mask.quantile)
        out = [i for i, name in enumerate(IDS8) if name in held]
        expected.append(scorer.score(y[out], [IDS8[i] for i in out], mask_threshold=tau, level_model=level).score)
    expected_scores = torch.cat(expected).double().sort().values
    assert torch.allclose(torch.tensor(cal.normal_scores, dtype=torch.float64), expected_scores, atol=1e-6)
    assert cal.score_stats == pytest.approx(score_summary(expected_scores))
    # the stored level model and mask threshold are fitted on all eight
    everything = fit_level_model(scorer, [(y, IDS8)], [first])
    assert everything is not None and cal.level_model.beta == pytest.approx(everything.beta, abs=1e-5)
    assert cal.mask_threshold == pytest.approx(quantile_threshold(scorer.mask_evidence(first, y, everything), 0.995),
                                               rel=1e-4)
    # k = ⌈9 · 0.75⌉ = 7 <= 8: the 7th smallest score certifies 0.25
    assert cal.score_threshold == cal.normal_scores[6] and cal.certified_fpr == 0.25
    assert Calibration.from_json(json.loads(json.dumps(cal.to_json()))) == cal  # the level model survives JSON
    assert set(cal.score_stats) == {"n", "mean", "std", "q50", "q90", "q99"}


@pytest.mark.parametrize(("n", "alpha", "k", "certified"), [
    (19, 0.1, 18, 0.1),        # k = ⌈20 · 0.9⌉ = 18
    (99, 0.01, 99, 0.01),      # exactly enough normals for 1 %
    (98, 0.01, 98, 1 / 99),    # one short: the largest score, certifying 1/(n + 1)
    (5, 0.01, 5, 1 / 6),       # the case: 5 normals never certify 1 %
    (200, 0.05, 191, 0.05),    # k = ⌈201 · 0.95⌉ = 191
])
def test_the_conformal_threshold_is_the_order_statistic_that_certifies_alpha(
        n: int, alpha: float, k: int, certified: float) -> None:
    scores = torch.randperm(n).double() + 1.0  # the values 1..n, shuffled
    threshold, rate = conformal_threshold(scores, alpha)
    assert threshold == float(k) and rate == pytest.approx(certified)
    assert normals_needed(alpha) == {0.1: 9, 0.01: 99, 0.05: 19}[alpha]


@pytest.mark.parametrize(("n", "alpha"), [(12, 0.01), (40, 0.05), (200, 0.01)])
def test_the_90_percent_bound_holds_for_nine_in_ten_held_out_draws(n: int, alpha: float) -> None:
    """The rate of one threshold is random: bottle's 12 normals certify 1/13 on average, yet one draw can flag
    a quarter of the test normals. fpr_bound(0.9) is exceeded by the true rate in about 10 % of draws."""
    g = torch.Generator().manual_seed(1)
    draws = torch.rand((3000, n), generator=g, dtype=torch.float64)  # uniform scores: the true rate is 1 − t
    rates = torch.tensor([1.0 - conformal_threshold(d, alpha)[0] for d in draws])
    bound = fpr_bound(n, alpha, 0.9)
    assert float((rates > bound).double().mean()) == pytest.approx(0.1, abs=0.025)
    assert float(rates.mean()) <= conformal_threshold(draws[0], alpha)[1] + 0.01  # and on average: certified


@pytest.mark.parametrize(("n", "alpha"), [(5, 0.01), (19, 0.1), (40, 0.05)])
def test_the_certified_rate_holds_for_exchangeable_normals(n: int, alpha: float) -> None:
    """P(new normal > threshold) over many calibration draws: at most the certified rate (the quantile rule
    the threshold used to be exceeds it: n = 5 normals flagged ≈ 1/6 + of unseen normals at "1 %")."""
    g = torch.Generator().manual_seed(0)
    trials = 5000
    normals = torch.rand((trials, n), generator=g, dtype=torch.float64)
    new = torch.rand(trials, generator=g, dtype=torch.float64)
    flagged, certified = 0, 0.0
    for t in range(trials):
        threshold, certified = conformal_threshold(normals[t], alpha)
        flagged += int(new[t] > threshold)
    assert flagged / trials <= certified + 3 * math.sqrt(certified / trials)


def test_p_values_count_the_normal_scores_at_or_above() -> None:
    cal = Calibration(None, 4.0, 0.995, 0.2, 4, normal_scores=(1.0, 2.0, 3.0, 4.0), certified_fpr=0.2)
    p = cal.p_values(torch.tensor([2.5, 5.0, 0.0, 2.0]))
    assert p is not None and p.tolist() == pytest.approx([3 / 5, 1 / 5, 5 / 5, 4 / 5])
    assert Calibration(None, 4.0, 0.995, 0.2, 4).p_values(torch.tensor([1.0])) is None  # an older file


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.3"])
def test_a_threshold_that_is_not_a_finite_number_is_refused_naming_it(bad: object) -> None:
    data = Calibration(0.1, 0.2, 0.995, 0.01, 4).to_json()
    data["score_threshold"] = bad
    with pytest.raises(ValueError, match="expected a finite number for score_threshold"):
        Calibration.from_json(json.loads(json.dumps(data)))


def test_an_older_calibration_file_reads_with_the_current_keys() -> None:
    cal = Calibration(0.1, 2.0, 0.995, 0.01, 4, {"mean": 1.0, "std": 0.5, "q50": 1.0}).to_json()
    cal["score_stats"] = {"mean": 1.0, "std": 0.5, "q500": 0.9, "q900": 1.5, "q990": 2.0}
    assert Calibration.from_json(cal).score_stats == {"mean": 1.0, "std": 0.5, "q50": 0.9, "q90": 1.5, "q99": 2.0}
    # version 1: the level model as a list, measured over every pixel; no certified rate, no stored scores
    v1 = {k: v for k, v in cal.items() if k not in ("certified_fpr", "normal_scores", "folds")}
    v1.update(version=1, level_model=[-2.0, 0.5, 0.3, 0.05, 0.4])
    old = Calibration.from_json(v1)
    assert old.level_model == LevelModel((-2.0, 0.5, 0.3), 0.05, 0.4, "observation")
    assert old.certified_fpr is None and old.p_values(torch.tensor([1.0])) is None


def test_calibrating_on_too_few_normals_warns(tiny_unet: torch.nn.Module, images16: torch.Tensor) -> None:
    scorer = make_scorer(tiny_unet, tiny_sampler(mask=MaskConfig(mode="calibrated")))
    with pytest.warns(UserWarning, match="calibrating on 1 held-out normal image"):
        fit_calibration(scorer, [(images16[:1], ["a"])], target_fpr=0.25)
    with pytest.warns(UserWarning, match=r"certifies a false-alarm rate of 1/5 = 0.2, not the target 0.01: expected "
                                         r"at least 99 held-out normals for it, got 4"):
        cal = fit_calibration(scorer, [(images16, ["a", "b", "c", "d"])], target_fpr=0.01)
    assert cal.certified_fpr == pytest.approx(1 / (cal.n_conformal + 1))


@pytest.mark.parametrize("normalise", ["acquisition", "none"])
def test_one_stage_calibration_counts_the_passes_it_makes(tiny_unet: torch.nn.Module, images16: torch.Tensor,
                                                          normalise: str) -> None:
    maps = MapConfig(backbone="none", normalise=normalise)  # type: ignore[arg-type]
    scorer = make_scorer(tiny_unet, tiny_sampler(mask=MaskConfig(mode="none")), maps)
    ticks: list[int] = []
    cal = fit_calibration(scorer, [(images16, ["a", "b", "c", "d"])], target_fpr=0.25, on_images=ticks.append)
    passes = calibration_passes(scorer.sampler.mask, normalise, 4)
    assert sum(ticks) == passes == (8 if normalise == "acquisition" else 4)  # the level's first pass, the score's
    assert (cal.level_model is not None) == (normalise == "acquisition") and cal.mask_threshold is None
    assert cal.n_conformal == 4 and cal.folds == (4 if normalise == "acquisition" else 1)  # nothing to fit: one fold


def test_a_transductive_model_calibrates_with_its_calibration_set_as_the_scored_set(
        tiny_unet: torch.nn.Module, images16: torch.Tensor) -> None:
    """Every two-stage paper preset masks transductively: calibration used to ask the scorer for a threshold
    it cannot have ("expected a stage-1 mask threshold for mask mode 'transductive'") after training."""
    maps = MapConfig(backbone="none", normalise="none")
    scorer = make_scorer(tiny_unet, tiny_sampler(mask=MaskConfig(mode="transductive", fraction=0.5)), maps)
    cal = fit_calibration(scorer, [(images16, ["a", "b", "c", "d"])], target_fpr=0.25)
    assert cal.mask_threshold is None and cal.n_conformal == 4 and math.isfinite(cal.score_threshold)
    s1 = scorer.stage1(images16, ["a", "b", "c", "d"])
    tau = float(s1.anomaly_map.min()) + 0.5 * float(s1.anomaly_map.max() - s1.anomaly_map.min())
    expected = scorer.score(images16, ["a", "b", "c", "d"], mask_threshold=tau, stage1=s1).score.double()
    assert cal.folds == 1  # nothing is fitted: every score comes from the one model
    assert torch.allclose(torch.tensor(cal.normal_scores, dtype=torch.float64), expected.sort().values, atol=1e-6)
