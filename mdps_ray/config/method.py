"""Configuration: frozen pydantic v2 models, presets, overrides and a stable hash.

One validated :class:`MdpsConfig` flows from the entry point down; each layer receives only
its part (``prior``, ``train``, ``sampler``, ``maps``, ``score``, ``runtime``, ``tiling``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_READ_SIDE = 8192  # the largest side tiling.read_size takes, given or native


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ConfigError(ValueError):
    """A user error in a configuration, worded as one line."""


class PriorConfig(_Frozen):
    """The DDIM prior: diffusers UNet2DModel + linear-β schedule, ε-prediction."""

    image_size: int = Field(64, ge=8, le=1024, description="Square image side in pixels.")
    in_channels: int = Field(3, description="Image channels (grayscale is copied to RGB).")
    block_out_channels: tuple[int, ...] = Field((16, 32, 64), description="UNet widths per level.")
    layers_per_block: int = Field(1, ge=1, le=4, description="Res-blocks per UNet level.")
    attention_levels: tuple[bool, ...] = Field(
        (False, False, False), description="Self-attention at each level (same length as widths)."
    )
    attention_head_dim: int = Field(32, ge=1, description="Channels per attention head.")
    norm_num_groups: int = Field(8, ge=1, description="GroupNorm groups; must divide every width.")
    resnet_updown: bool = Field(False, description="BigGAN-style res-block up/down sampling.")
    num_train_timesteps: int = Field(1000, ge=2, description="T, number of diffusion steps.")
    beta_start: float = Field(1e-4, gt=0, lt=1, description="β at t = 0 (linear schedule).")
    beta_end: float = Field(0.02, gt=0, lt=1, description="β at t = T − 1 (linear schedule).")

    @model_validator(mode="after")
    def _check(self) -> PriorConfig:
        if self.in_channels != 3:
            raise ValueError(f"expected in_channels=3 (RGB), got {self.in_channels}")
        if len(self.attention_levels) != len(self.block_out_channels):
            raise ValueError(
                f"expected one attention flag per level ({len(self.block_out_channels)}), "
                f"got {len(self.attention_levels)}"
            )
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"expected widths divisible by norm_num_groups={self.norm_num_groups}, got {bad}")
        attn_widths = [c for c, a in zip(self.block_out_channels, self.attention_levels, strict=True) if a]
        bad_heads = [c for c in [*attn_widths, self.block_out_channels[-1]] if c % self.attention_head_dim]
        if bad_heads:
            raise ValueError(
                f"expected attention widths (and the last, mid-block width) divisible by "
                f"attention_head_dim={self.attention_head_dim}, got {bad_heads}"
            )
        if self.image_size % 2 ** (len(self.block_out_channels) - 1):
            raise ValueError(
                f"expected image_size divisible by 2^(levels-1)="
                f"{2 ** (len(self.block_out_channels) - 1)}, got {self.image_size}"
            )
        if self.beta_start >= self.beta_end:
            raise ValueError(f"expected beta_start < beta_end, got {self.beta_start} >= {self.beta_end}")
        return self


class TrainConfig(_Frozen):
    """The ε-prediction training recipe of the prior."""

    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="L2 added to the gradient (coupled, as torch Adam).")
    batch_size: int = Field(16, ge=1, description="Images per optimiser step (global).")
    loss_reduction: Literal["mean", "sum"] = Field(
        "mean", description="Per-image reduction of ‖ε − ε_θ‖²: 'sum' over C·H·W is the paper's."
    )
    t_max: int | None = Field(
        300, ge=1, description="Draw t uniformly in [t_min, t_max); None = T (the paper draws all)."
    )
    t_min: int = Field(0, ge=0, description="Smallest t drawn (the paper's code draws t >= 1).")
    ema_decay: float | None = Field(0.999, gt=0, lt=1, description="EMA decay; None = no EMA.")
    grad_clip: float | None = Field(None, gt=0, description="Max gradient norm; None = no clipping.")
    flips: bool = Field(False, description="Random horizontal/vertical flips (off in the paper).")
    seed: int = Field(0, description="Seed of weight init, batches and t/ε draws.")


class StageConfig(_Frozen):
    """One posterior-sampling pass."""

    start_step: int = Field(200, ge=1, le=999, description="T′: level y is forward-noised to.")
    stride: int = Field(20, ge=1, description="Step between visited timesteps (the code's skip).")
    rho: float = Field(30.0, ge=0, description="Guidance scale ρ (the code's w / w_mask).")
    n_samples: int = Field(2, ge=1, le=64, description="Posterior samples n per image.")


class MaskConfig(_Frozen):
    """How stage 1 becomes the stage-2 mask m (1 = suspected anomalous)."""

    mode: Literal["none", "calibrated", "transductive"] = Field(
        "calibrated",
        description="none: single stage; calibrated: threshold fitted on normal images; "
        "transductive: min + fraction·(max − min) over the scored set (paper code).",
    )
    quantile: float = Field(0.995, gt=0, lt=1, description="Calibration quantile of normal stage-1 map values.")
    fraction: float = Field(0.12, ge=0, le=1, description="Transductive fraction f (mask0_thresholds).")
    threshold: float | None = Field(None, description="Explicit threshold; overrides calibration.json.")


class SamplerConfig(_Frozen):
    """Masked diffusion posterior sampling: stage 1 (unmasked) → mask → stage 2 (masked)."""

    stage1: StageConfig = Field(StageConfig(), description="Unmasked pass that builds the mask.")
    stage2: StageConfig = Field(StageConfig(), description="The final pass (masked, or the only one).")
    mask: MaskConfig = MaskConfig()
    masked_sampler: Literal["eps_mix", "replace"] = Field(
        "eps_mix", description="eps_mix: paper Fig. 1; replace: official code (RePaint-style)."
    )
    eta: float = Field(1.0, ge=0, le=1, description="DDIM η (1 = the official code).")
    guidance_norm: Literal["per_image", "batch"] = Field(
        "per_image", description="batch = the official code's batch-wide norm (couples images)."
    )
    alignment: Literal["code", "aligned"] = Field(
        "aligned", description="code: first step labelled T′ − stride, last at t = 0 (official)."
    )
    seed: int = Field(0, description="Run seed; per-image noise derives from (seed, image id, sample).")


class MapConfig(_Frozen):
    """Difference map: pixel term + perceptual term, blurred."""

    backbone: Literal["lpips-alex", "lpips-vgg", "lpips-squeeze", "wide_resnet101_2", "random", "none"] = Field(
        "none", description="Perceptual backbone; none = pixel term only; random = untrained (tests)."
    )
    backbone_weights: str | None = Field(
        None, description="Path/URI of the backbone weights; default: the installed LPIPS cache."
    )
    pixel_weight: float = Field(7.0, ge=0, description="Pixel-term weight (the code's eta); 0 = perceptual only.")
    weighting: Literal["per_image", "batch"] = Field(
        "per_image", description="Where the max-ratio of the pixel term is taken (batch = official code)."
    )
    blur_sigma: float = Field(1.0, ge=0, description="Gaussian σ in pixels (4 at 256 px in the paper); 0 = none.")
    scale: float = Field(0.5, gt=0, description="Multiplier of the final map (the code's /2).")
    crop: int | None = Field(None, ge=1, description="Centre crop before scoring (224 for MVTec in the paper).")
    normalise: Literal["acquisition", "none"] = Field(
        "acquisition",
        description=(
            "acquisition: divide each image's maps by the level sigma(y) that normal images of its brightness and "
            "contrast have (log-linear in the log median absolute deviation and the median of the image, measured "
            "where its first map is ordinary with the posterior mean standing in elsewhere, so a defect cannot "
            "lower its own score; fitted on held-out normals at calibration and stored in calibration.json), so "
            "images under brighter light or with more contrast do not score higher for it; the mask threshold is "
            "fitted on these maps. Without a fitted level (no calibration) the maps stay raw. none: raw maps (the "
            "paper's)."
        ),
    )
    stage1_weight: float = Field(
        0.1,
        ge=0,
        description=(
            "Two-stage only: final map = stage-2 map + w * stage-1 map, so that pixels outside the mask (zero in "
            "the stage-2 map) are ordered by their stage-1 evidence; 0 = the paper's final map."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> MapConfig:
        if self.backbone == "none" and self.pixel_weight == 0:
            raise ValueError("expected a perceptual backbone or pixel_weight > 0, got neither")
        return self


class ScoreConfig(_Frozen):
    """Image score from the anomaly map."""

    method: Literal["softmax_topk", "max", "mean_topk"] = Field("mean_topk", description="Score rule.")
    k: int = Field(500, ge=1, description="Top-k for softmax_topk (paper: 500).")
    fraction: float = Field(0.01, gt=0, le=1, description="Top fraction for mean_topk.")


class TilingConfig(_Frozen):
    """Scoring by tiles: the image is read at ``read_size`` and the prior sees tiles of its own ``image_size``.

    Off by default (the image is squeezed to the prior's side). On, every image is read at
    ``read_size`` × ``read_size``, cut into prior-sized tiles at ``stride``, each tile sampled and
    mapped, and the tile maps stitched (core/tiles.py) into a map at ``read_size``: a 1–3 px crack at
    256 px stays 1–3 px instead of becoming sub-pixel at 64 px. The prior is *shared* by every tile
    position, trained on random crops of the normal images read at ``read_size``, or *per_position*:
    one prior per tile position (anomalib's tiled ensemble), each trained on that tile of every normal
    image — for objects, whose every position looks different; the positions share the training budget.
    ``read_size="native"`` is the side of the normal training images, fixed when the prior is trained
    (data/native.py) and kept in the model's config.
    """

    enabled: bool = Field(False, description="Score (and train) by tiles.")
    read_size: Annotated[int, Field(ge=8, le=MAX_READ_SIDE)] | Literal["native"] = Field(
        256, description="Side the images are read at, in pixels, or native: the side of the normal training "
        "images, fixed in the model when its prior is trained (they must be square and of one size).")
    stride: int | None = Field(None, ge=1, description="Tile step in pixels; default 3/4 of the tile (25 % overlap).")
    seams: Literal["flat", "smooth"] = Field(
        "flat", description="Stitching weights: flat mean in overlaps, or smooth (a raised cosine per tile).")
    prior: Literal["shared", "per_position"] = Field(
        "shared", description="One prior for every tile (trained on random crops), or one per tile position "
        "(each trained on its tile of every image; they share the training budget).")


class RuntimeConfig(_Frozen):
    """How the scorer runs (speed knobs); outputs agree with the fp32 defaults within tolerance."""

    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description=(
            "UNet weight/activation dtype; sampler maths, maps and scores stay fp32. On a CPU with AVX512-BF16, "
            "bf16 with channels_last=false ran the UNet 1.3x faster and scored real categories 1.1-1.2x faster "
            "end to end at the same AUROC (+-0.002); slow on CPUs without bf16 instructions."
        ),
    )
    channels_last: bool = Field(True, description="NHWC memory format for the UNet (1.25x on CPU, same maps).")
    compile: bool = Field(False, description="torch.compile the UNet (first batch pays the compile time).")
    tf32: bool = Field(False, description="Allow TF32 for fp32 matmuls and convolutions on NVIDIA GPUs (faster, "
                       "not exact fp32). Off by default, so GPU fp32 is CPU fp32; bf16 is the recommended fast "
                       "GPU precision.")


class MdpsConfig(_Frozen):
    """Everything that defines the method for one category.

    The field defaults *are* the ``default`` preset (``preset("default") == MdpsConfig()``): one
    CPU-scale setting chosen on the development categories (benchmarks/results/quality.md).
    """

    prior: PriorConfig = PriorConfig()
    train: TrainConfig = TrainConfig()
    sampler: SamplerConfig = SamplerConfig()
    maps: MapConfig = MapConfig()
    score: ScoreConfig = ScoreConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    tiling: TilingConfig = TilingConfig()

    @property
    def read_size(self) -> int:
        """The side images are read (decoded) at and maps are produced at."""
        if not self.tiling.enabled:
            return self.prior.image_size
        if self.tiling.read_size == "native":
            raise ConfigError("expected tiling.read_size as a side in pixels here, got native: native is fixed "
                              "from the normal training images when a prior is trained, and the trained model "
                              "keeps that side; leave tiling.read_size unset when scoring a model")
        return self.tiling.read_size

    @property
    def tile_stride(self) -> int:
        """The tiles' step: ``tiling.stride`` or 3/4 of the prior's side."""
        return self.tiling.stride or max(1, 3 * self.prior.image_size // 4)

    @model_validator(mode="after")
    def _check(self) -> MdpsConfig:
        if self.tiling.prior == "per_position" and not self.tiling.enabled:
            raise ValueError("expected tiling.enabled=true with tiling.prior=per_position, got tiling off; "
                             "set tiling.enabled=true (per-position priors exist only for tiles)")
        side = self.prior.image_size if self.tiling.read_size == "native" else self.tiling.read_size
        if self.tiling.enabled and not self.tile_stride <= self.prior.image_size <= side:
            raise ValueError(f"expected tiling.stride <= prior.image_size <= tiling.read_size, got stride "
                             f"{self.tile_stride}, tile {self.prior.image_size}, read_size {self.tiling.read_size}")
        guided = self.sampler.stage1.rho > 0 or self.sampler.stage2.rho > 0
        if self.runtime.precision == "fp16" and guided:
            raise ValueError("expected runtime.precision bf16 or fp32 with guidance (rho > 0), got fp16: the guidance "
                             "gradient underflows in fp16 without loss scaling; use runtime.precision=bf16")
        return self

    def digest(self) -> str:
        """sha256 of the canonical JSON of this config (16 hex digits)."""
        return config_hash(self)


# Keys added after configs were first hashed, with the value that leaves a hash as it was: a config at
# that value hashes as before the key existed (committed rows, nightly skips and calibrations stay valid).
_HASH_OMITS: tuple[tuple[str, str, Any], ...] = (("runtime", "tf32", False), ("maps", "normalise", "none"),
                                                 ("tiling", "prior", "shared"))


# Sections added after configs were first hashed: left out of the hash while at their default.
_HASH_OMITS_SECTIONS: dict[str, type[BaseModel]] = {"tiling": TilingConfig}


def config_hash(model: BaseModel, as_section: str | None = None) -> str:
    """A stable hash of a config: sorted-key JSON, sha256, first 16 hex digits (``as_section``: the name of the
    section ``model`` is, so the keys added to it later are omitted as in the whole config's hash)."""
    data = model.model_dump(mode="json")
    if as_section is not None:
        data = {k: v for k, v in data.items() if (as_section, k, v) not in _HASH_OMITS}
    for section, default in _HASH_OMITS_SECTIONS.items():
        if section in data and data[section] == default().model_dump(mode="json"):
            data.pop(section)
    for section, key, value in _HASH_OMITS:
        if isinstance(data.get(section), dict) and data[section].get(key, value) == value:
            data[section].pop(key, None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def scoring_hash(cfg_hash: str, device_kind: str) -> str:
    """The config hash that scored rows and the nightly ledger carry: the config's, with the device kind
    folded in, so ``--incremental`` never takes rows scored on one kind of device for another's. CPU keeps
    the plain hash (rows committed before the device was part of the key stay valid)."""
    if device_kind == "cpu":
        return cfg_hash
    return hashlib.sha256(f"{cfg_hash}|device={device_kind}".encode()).hexdigest()[:16]


def method_hash(prior: PriorConfig, sampler: SamplerConfig, maps: MapConfig, score: ScoreConfig,
                tiling: TilingConfig | None = None) -> str:
    """Hash of the settings that calibrated thresholds depend on (runtime knobs left out; tiling only when on,
    and every key added later left out at the value that behaves as before, exactly as in :func:`config_hash`:
    calibrations made before such a key existed stay valid)."""
    parts: dict[str, BaseModel] = {"prior": prior, "sampler": sampler, "maps": maps, "score": score}
    text = "|".join(config_hash(part, name) for name, part in parts.items())
    if tiling is not None and tiling.enabled:
        text += "|" + config_hash(tiling, "tiling")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Keys added to the method after models were first saved, with the value those models were scored
# with: a stored config (mdps.json, run.json) without the key keeps its old behaviour.
_ADDED_KEYS: tuple[tuple[str, str, Any], ...] = (("maps", "stage1_weight", 0.0), ("maps", "normalise", "none"))


def upgrade_stored(data: dict[str, Any]) -> dict[str, Any]:
    """A stored method config (JSON) with the keys it predates filled in as it was computed."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for section, key, value in _ADDED_KEYS:
        if isinstance(out.get(section), dict):
            out[section].setdefault(key, value)
    return out
