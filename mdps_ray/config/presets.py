"""Named configurations: ``default`` and the 18 released ``paper/<dataset>/<category>`` ones.

The paper presets reproduce the official code (docs/method.md §6): 256 px, the ≈33 M-parameter
UNet and its training recipe, the code's timestep labelling, RePaint-style masked sampling,
batch-wide guidance norms and map maxima, the transductive mask threshold, the Wide-ResNet-101-2
feature distance and the softmax top-500 image score. They couple images within a batch of 8
and need the whole test split before stage 2: use them to reproduce numbers, not in production.
"""

from __future__ import annotations

from mdps_ray.config.method import (
    ConfigError,
    MapConfig,
    MaskConfig,
    MdpsConfig,
    PriorConfig,
    SamplerConfig,
    ScoreConfig,
    StageConfig,
    TrainConfig,
)

# category: (mask_steps, w_mask, mask0_thresholds, test_steps, w, eta); mask_steps 0 = one stage
_PAPER: dict[str, tuple[int, float, float, int, float, float]] = {
    "mvtec/bottle": (200, 50, 0.12, 200, 100, 7),
    "mvtec/cable": (250, 50, 0.19, 250, 50, 1),
    "mvtec/capsule": (200, 100, 0.03, 200, 100, 7),
    "mvtec/carpet": (0, 0, 0.15, 250, 100, 2),
    "mvtec/grid": (0, 0, 0.15, 200, 100, 7),
    "mvtec/hazelnut": (250, 50, 0.25, 200, 0, 7),
    "mvtec/leather": (0, 0, 0.25, 200, 100, 7),
    "mvtec/metal_nut": (250, 50, 0.25, 200, 0, 7),
    "mvtec/pill": (150, 50, 0.12, 200, 100, 7),
    "mvtec/screw": (200, 50, 0.15, 200, 0, 7),
    "mvtec/tile": (0, 0, 0.15, 150, 100, 0),
    "mvtec/toothbrush": (250, 50, 0.15, 200, 50, 7),
    "mvtec/transistor": (200, 50, 0.18, 250, 50, 7),
    "mvtec/wood": (0, 0, 0.15, 200, 100, 7),
    "mvtec/zipper": (200, 0, 0.08, 200, 100, 7),
    "btad/01": (200, 100, 0.05, 250, 150, 7),
    "btad/02": (200, 50, 0.10, 250, 200, 7),
    "btad/03": (200, 50, 0.10, 250, 50, 7),
}

PAPER_PRIOR = PriorConfig(
    image_size=256,
    block_out_channels=(64, 64, 128, 128, 256, 256),
    layers_per_block=2,
    attention_levels=(False, False, False, True, True, True),
    attention_head_dim=32,
    norm_num_groups=32,
    resnet_updown=True,
)

PAPER_TRAIN = TrainConfig(
    lr=3e-4,
    weight_decay=0.05,
    batch_size=8,
    loss_reduction="sum",
    t_min=1,
    t_max=None,
    ema_decay=None,
    seed=42,
)

# Chosen on the development categories (benchmarks/results/quality.md): pixel-only maps beat the
# L1 + LPIPS-alex maps on both kolektorsdd and bottle at CPU scale, and cost less; adding 0.1 x the
# stage-1 map lifts kolektorsdd pixel AUROC from 0.70 to 0.79 at the same image AUROC
# (benchmarks/results/experiments/stage1_weight.md).
# The field defaults of MdpsConfig are this preset (one source of defaults).
DEFAULT = MdpsConfig()


def paper_preset(name: str) -> MdpsConfig:
    """The released configuration of ``<dataset>/<category>``, e.g. ``mvtec/bottle``."""
    mask_steps, w_mask, fraction, test_steps, w, eta = _PAPER[name]
    two_stage = mask_steps > 0
    sampler = SamplerConfig(
        stage1=StageConfig(start_step=mask_steps if two_stage else test_steps, stride=20, rho=w_mask, n_samples=1),
        stage2=StageConfig(start_step=test_steps, stride=20, rho=w, n_samples=1),
        mask=MaskConfig(mode="transductive" if two_stage else "none", fraction=fraction),
        masked_sampler="replace",
        eta=1.0,
        guidance_norm="batch",
        alignment="code",
        seed=42,
    )
    maps = MapConfig(
        backbone="wide_resnet101_2",
        pixel_weight=eta,
        weighting="batch",
        blur_sigma=4.0,
        scale=0.5,
        crop=224 if name.startswith("mvtec/") else None,
        stage1_weight=0.0,  # the paper's final map is the stage-2 map alone
        normalise="none",
    )
    score = ScoreConfig(method="softmax_topk", k=500)
    return MdpsConfig(prior=PAPER_PRIOR, train=PAPER_TRAIN, sampler=sampler, maps=maps, score=score)


def preset_names() -> list[str]:
    """Every preset name accepted by :func:`preset`."""
    return ["default", *(f"paper/{k}" for k in _PAPER)]


def preset(name: str) -> MdpsConfig:
    """Look up a preset by name (``default`` or ``paper/<dataset>/<category>``)."""
    if name == "default":
        return DEFAULT
    if name.startswith("paper/") and name.removeprefix("paper/") in _PAPER:
        return paper_preset(name.removeprefix("paper/"))
    raise ConfigError(f"expected a preset in {preset_names()}, got {name!r}")
