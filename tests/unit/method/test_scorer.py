"""The scorer: per-image independence through both stages, input validation, threshold rules."""

from __future__ import annotations

import pytest
import torch

from mdps_ray.config.method import MapConfig, MaskConfig, ScoreConfig
from mdps_ray.core import maps
from tests.helpers.models import make_scorer, tiny_sampler

IDS = ["cat/test/good/000", "cat/test/good/001", "cat/test/crack/000", "cat/test/crack/001"]


@pytest.mark.parametrize("mode", ["calibrated", "none"])
@pytest.mark.parametrize("masked_sampler", ["eps_mix", "replace"])
def test_batch_of_four_equals_each_alone(
    tiny_unet: torch.nn.Module, images16: torch.Tensor, mode: str, masked_sampler: str
) -> None:
    sampler = tiny_sampler(mask=MaskConfig(mode=mode, threshold=0.05), masked_sampler=masked_sampler)
    scorer = make_scorer(tiny_unet, sampler, MapConfig(backbone="random", blur_sigma=1.0, stage1_weight=0.1))
    batch = scorer.score(images16, IDS)
    for i in range(4):
        alone = scorer.score(images16[i : i + 1], IDS[i : i + 1])
        assert torch.allclose(batch.score[i], alone.score[0], atol=1e-5)
        assert torch.allclose(batch.anomaly_map[i], alone.anomaly_map[0], atol=1e-5)
        assert torch.allclose(batch.reconstruction[i], alone.reconstruction[0], atol=1e-5)


def test_result_depends_on_the_image_id_not_the_position(tiny_unet: torch.nn.Module, images16: torch.Tensor) -> None:
    scorer = make_scorer(tiny_unet)
    a = scorer.score(images16[:2], IDS[:2])
    b = scorer.score(images16[[1, 0]], [IDS[1], IDS[0]])
    assert torch.allclose(a.score, b.score[[1, 0]], atol=1e-5)


def test_outputs_have_documented_shapes(tiny_unet: torch.nn.Module, images16: torch.Tensor) -> None:
    scorer = make_scorer(
        tiny_unet,
        maps=MapConfig(backbone="random", blur_sigma=1.0, crop=12, stage1_weight=0.0),
        score=ScoreConfig(method="softmax_topk", k=10),
    )
    r = scorer.score(images16, IDS)
    assert r.score.shape == (4,) and r.anomaly_map.shape == (4, 1, 12, 12)
    assert r.reconstruction.shape == (4, 3, 16, 16)
    assert r.stage1_map is not None and r.stage1_map.shape == (4, 1, 16, 16)
    assert r.mask is not None and set(r.mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.isfinite(r.score).all() and (r.anomaly_map >= 0).all()


def test_final_map_is_stage2_plus_weighted_stage1(tiny_unet: torch.nn.Module, images16: torch.Tensor) -> None:
    sampler = tiny_sampler(mask=MaskConfig(mode="calibrated", threshold=0.15))
    raw = MapConfig(backbone="random", blur_sigma=1.0, stage1_weight=0.0, normalise="none")
    paper = make_scorer(tiny_unet, sampler, raw).score(images16, IDS)
    fused = make_scorer(tiny_unet, sampler, raw.model_copy(update={"stage1_weight": 0.5}))
    r = fused.score(images16, IDS)
    assert paper.mask is not None and paper.stage1_map is not None and 0 < paper.mask.mean() < 1
    assert torch.allclose(r.anomaly_map, paper.anomaly_map + 0.5 * paper.stage1_map, atol=1e-6)
    assert not torch.allclose(r.score, paper.score)
    # single stage: there is no stage-1 map, so the weight changes nothing
    single = tiny_sampler(mask=MaskConfig(mode="none"))
    plain = make_scorer(tiny_unet, single).score(images16, IDS)
    weighted = make_scorer(tiny_unet, single, MapConfig(backbone="random", blur_sigma=1.0, stage1_weight=0.5))
    assert torch.equal(weighted.score(images16, IDS).anomaly_map, plain.anomaly_map)


def test_relative_maps_divide_both_stages_by_the_expected_level_of_each_image(
    tiny_unet: torch.nn.Module, images16: torch.Tensor
) -> None:
    raw_maps = MapConfig(backbone="random", blur_sigma=1.0, stage1_weight=0.5, normalise="none")
    sampler = tiny_sampler(mask=MaskConfig(mode="calibrated", threshold=1.2))
    model = maps.LevelModel((-2.0, 0.5, 0.3), 0.05, 0.4)  # β and the fitted range of σ
    relative = make_scorer(tiny_unet, sampler, raw_maps.model_copy(update={"normalise": "acquisition"}))
    relative.level_model = model
    r = relative.score(images16, IDS)
    assert r.stage1_map is not None and r.mask is not None
    first = relative.stage1(images16, IDS)  # the same pass: its map says which pixels are ordinary
    assert torch.equal(first.anomaly_map, r.stage1_map)
    phi = maps.acquisition_features(images16, first.anomaly_map, first.reconstruction)
    sigma = (phi @ torch.tensor(model.beta, dtype=torch.float64)).exp().clamp(0.05, 0.4).float().view(-1, 1, 1, 1)
    # the mask compares A1 / sigma with the threshold: the raw stage-1 map thresholded at 1.2 sigma
    assert torch.equal(r.mask, (r.stage1_map > 1.2 * sigma).float()) and 0 < r.mask.mean() < 1
    # the final map is (A2 + w A1) / sigma, A2 sampled under that mask
    stage2 = relative.run_stage(images16, IDS, sampler.stage2, "stage2", r.mask).anomaly_map
    assert torch.allclose(r.anomaly_map, (stage2 + 0.5 * r.stage1_map) / sigma, atol=1e-5)
    # batch-mates do not move an image's level
    alone = relative.score(images16[2:3], IDS[2:3])
    assert torch.allclose(alone.anomaly_map[0], r.anomaly_map[2], atol=1e-5)
    # without a fitted level model, or with normalise=none, the maps are raw
    relative.level_model = None
    plain = make_scorer(tiny_unet, sampler, raw_maps).score(images16, IDS)
    assert torch.allclose(relative.score(images16, IDS).anomaly_map, plain.anomaly_map, atol=1e-6)


def test_pixel_only_maps_work_without_a_backbone(tiny_unet: torch.nn.Module, images16: torch.Tensor) -> None:
    scorer = make_scorer(tiny_unet, maps=MapConfig(backbone="none", blur_sigma=0.0, stage1_weight=0.0))
    scorer.backbone = None
    r = scorer.score(images16, IDS)
    assert torch.isfinite(r.anomaly_map).all()


@pytest.mark.parametrize(
    ("images", "ids", "message"),
    [
        (torch.zeros(2, 3, 8, 8), ["a", "b"], r"expected images of shape \(B, 3, 16, 16\), got \(2, 3, 8, 8\)"),
        (torch.zeros(2, 1, 16, 16), ["a", "b"], r"expected images of shape \(B, 3, 16, 16\), got \(2, 1, 16, 16\)"),
        (torch.full((1, 3, 16, 16), float("nan")), ["a"], "expected finite pixel values, got NaN or Inf"),
        (torch.full((1, 3, 16, 16), 2.0), ["a"], r"expected pixel values in \[-1, 1\], got range \[2, 2\]"),
        (torch.zeros(2, 3, 16, 16), ["a"], "expected 2 image ids, got 1"),
    ],
)
def test_bad_input_names_expected_and_received(
    tiny_unet: torch.nn.Module, images: torch.Tensor, ids: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_scorer(tiny_unet).score(images, ids)


def test_calibrated_mode_without_a_threshold_says_what_to_do(
    tiny_unet: torch.nn.Module, images16: torch.Tensor
) -> None:
    scorer = make_scorer(tiny_unet, tiny_sampler(mask=MaskConfig(mode="calibrated")))
    with pytest.raises(ValueError, match="calibrate the model"):
        scorer.score(images16, IDS)


def test_explicit_threshold_changes_the_mask(tiny_unet: torch.nn.Module, images16: torch.Tensor) -> None:
    scorer = make_scorer(tiny_unet)
    low = scorer.score(images16, IDS, mask_threshold=-1.0)
    high = scorer.score(images16, IDS, mask_threshold=1e9)
    assert low.mask is not None and high.mask is not None
    assert low.mask.all() and not high.mask.any()
    assert high.anomaly_map.abs().max() < 1e-3  # m = 0: every pixel tied to y, nothing differs
