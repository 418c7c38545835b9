"""No defect hides itself: a larger or stronger defect never scores lower than a smaller or weaker one.

The prior is an exact one for the image at hand (ε_θ names the noise that leads back to the clean normal
image), so every posterior sample is that image and the maps measure the defect alone; the level model
grows with the image's contrast as fitted ones do (β₁ = 1: the level proportional to the spread). With
the level measured over every pixel, a 24 px bright square on a low-contrast image raised the spread ×10,
scaled its own map down and kept the mask from firing: the score fell as the defect grew.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch

from mdps_ray.config.method import MdpsConfig
from mdps_ray.config.overrides import apply_overrides
from mdps_ray.core.maps import LevelModel
from mdps_ray.data.images import load_images
from mdps_ray.data.records import list_mvtec
from mdps_ray.method.scorer import AnomalyScorer
from mdps_ray.models.prior import alpha_bars
from tests.helpers.models import SHARED_DATASETS

SIDE = 64
SIZES = [2, 3, 4, 6, 8, 12, 16, 24, 32]
CONTRASTS = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
LEVEL = LevelModel((0.0, 1.0, 0.0), 1e-4, 10.0)  # σ̂ ∝ the spread of the image, over a wide range


def exact_prior(clean: torch.Tensor, cfg: MdpsConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """ε_θ(x_t, t) = (x_t − √ᾱ_t x_c) / √(1 − ᾱ_t) for the clean image x_c (1, 3, S, S): x̂0 is always x_c."""
    abar = alpha_bars(cfg.prior).float()

    def eps(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = abar[t.long()].view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * clean) / (1 - a).sqrt()

    return eps


def scorer_for(clean: torch.Tensor, normalise: str) -> AnomalyScorer:
    # one posterior sample per stage: with an exact prior every sample is the clean image, so n changes nothing
    cfg = apply_overrides(MdpsConfig(), {"maps": {"normalise": normalise},
                                         "sampler": {"stage1": {"n_samples": 1}, "stage2": {"n_samples": 1}}})
    assert cfg.maps.backbone == "none"  # the default's maps need no backbone
    return AnomalyScorer(exact_prior(clean, cfg), cfg.prior, cfg.sampler, cfg.maps, cfg.score, None,
                         mask_threshold=0.5, level_model=LEVEL)


def normal_images() -> dict[str, torch.Tensor]:
    """A flat low-contrast texture, and one real normal image of each development category when present."""
    g = torch.Generator().manual_seed(0)
    out = {"texture": (0.03 * torch.randn((1, 3, SIDE, SIDE), generator=g) - 0.2).clamp(-1, 1)}
    for name in ("kolektorsdd", "mvtec_bottle"):
        if (SHARED_DATASETS / name).is_dir():
            first = list_mvtec(str(SHARED_DATASETS / name), "train")[0]
            out[name] = load_images([first.uri], SIDE)
    return out


def square(y: torch.Tensor, side: int, delta: float) -> torch.Tensor:
    """y with a side × side square, ``delta`` brighter (clipped to [−1, 1]), at a fixed place."""
    out = y.clone()
    out[..., 20:20 + side, 16:16 + side] = (out[..., 20:20 + side, 16:16 + side] + delta).clamp(-1, 1)
    return out


def line(y: torch.Tensor, length: int, width: int, delta: float) -> torch.Tensor:
    """y with a straight horizontal scratch ``width`` px wide, ``delta`` darker, ``length`` px long."""
    out = y.clone()
    out[..., 30:30 + width, 8:8 + length] = (out[..., 30:30 + width, 8:8 + length] - delta).clamp(-1, 1)
    return out


def scores(scorer: AnomalyScorer, images: list[torch.Tensor]) -> list[float]:
    """One image at a time under the same id: the same noise for each, so only the defect differs."""
    return [float(scorer.score(im, ["probe"]).score[0]) for im in images]


def assert_non_decreasing(values: list[float], what: str) -> None:
    drops = [(i, a, b) for i, (a, b) in enumerate(itertools.pairwise(values)) if b < a * (1 - 1e-4)]
    assert not drops, f"{what}: the score fell as the defect grew at steps {drops} of {values}"


@pytest.mark.parametrize("normalise", ["acquisition", "none"])
@pytest.mark.parametrize("name", ["texture", "kolektorsdd", "mvtec_bottle"])
def test_a_larger_or_stronger_defect_never_scores_lower(name: str, normalise: str) -> None:
    images = normal_images()
    if name not in images:
        pytest.skip(f"real data absent: {SHARED_DATASETS / name} not found")
    y = images[name]
    scorer = scorer_for(y, normalise)
    assert_non_decreasing(scores(scorer, [square(y, s, 0.9) for s in SIZES]), f"{name} bright squares by size")
    assert_non_decreasing(scores(scorer, [square(y, s, -0.9) for s in SIZES]), f"{name} dark squares by size")
    assert_non_decreasing(scores(scorer, [square(y, 12, d) for d in CONTRASTS]), f"{name} squares by contrast")
    assert_non_decreasing(scores(scorer, [line(y, n, 2, 0.6) for n in (4, 8, 16, 32, 48)]), f"{name} lines by length")
    assert_non_decreasing(scores(scorer, [line(y, 40, w, 0.6) for w in (1, 2, 3, 5)]), f"{name} lines by width")
    assert_non_decreasing(scores(scorer, [line(y, 40, 2, d) for d in CONTRASTS]), f"{name} lines by contrast")


def test_the_exact_prior_scores_a_clean_image_below_every_defect() -> None:
    """The probe itself can fail: a clean image scores (near) zero and the smallest square above it."""
    y = normal_images()["texture"]
    scorer = scorer_for(y, "acquisition")
    clean, smallest = scores(scorer, [y, square(y, SIZES[0], 0.9)])
    assert clean < 1e-3 < smallest


def test_a_mask_that_fires_more_with_a_larger_defect_is_what_the_two_stage_score_sees() -> None:
    y = normal_images()["texture"]
    scorer = scorer_for(y, "acquisition")
    areas = [float(scorer.score(square(y, s, 0.9), ["probe"]).mask.mean()) for s in (4, 12, 24)]  # type: ignore[union-attr]
    assert areas[0] < areas[1] < areas[2]
    assert scorer.sampler.mask.mode == "calibrated" and scorer.mask_threshold == 0.5
