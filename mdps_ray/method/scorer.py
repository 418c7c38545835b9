"""The MDPS scorer: a batch of images in, per-image posterior samples, maps and scores out.

One process, one device. This is what a Ray actor wraps and what the benchmarks call.

    stage 1: n unmasked guided posterior samples → map A₁ → m = 1[A₁/σ̂(y) > threshold]
    stage 2: n masked guided posterior samples   → map A₂
    final:   A = (A₂ + w · A₁) / σ̂(y) (``maps.stage1_weight``)   → image score s

σ̂(y) is the stage-1 level that normal images of y's brightness and contrast have
(``maps.normalise="acquisition"``, the default; core/maps.py ``expected_level``, fitted at
calibration): a normal image under brighter light, whose every difference is larger, is not scored
higher for it. It is 1 with ``"none"`` or before a level model is fitted.

With tiling on (``tiling.enabled``) each stage runs on the prior-sized tiles of the image read at
``tiling.read_size`` (core/tiles.py) and returns the stitched map at that size; the mask, the fused
map and the score are then the same steps on the stitched maps, so the stage-1 mask of a tile is
its window of the stitched stage-1 map against the calibrated threshold. With per-position priors
(``tiling.prior="per_position"``) the scorer holds one ε_θ per tile position and each tile's rows go to
its own (core/tiles.py ``by_position``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mdps_ray.config.method import MapConfig, PriorConfig, SamplerConfig, ScoreConfig, StageConfig, TilingConfig
from mdps_ray.core import maps, masking, schedule, scores
from mdps_ray.core.guidance import Denoiser
from mdps_ray.core.noise import RowNoise, sample_seeds
from mdps_ray.core.sampler import ReverseProcess, sample_posterior
from mdps_ray.core.tiles import TileGrid, by_position
from mdps_ray.models.backbones import Backbone
from mdps_ray.models.prior import alpha_bars


@dataclass(frozen=True)
class StageOutput:
    """One sampling pass over B images with n samples each.

    Attributes:
        anomaly_map: mean difference map over the n samples, (B, 1, H, W), before any crop.
        reconstruction: mean posterior sample, (B, 3, H, W), in [−1, 1] (not clipped).
    """

    anomaly_map: torch.Tensor
    reconstruction: torch.Tensor


@dataclass(frozen=True)
class ScoreResult:
    """Per-image output of :meth:`AnomalyScorer.score`.

    Attributes:
        image_ids: B ids, in input order.
        score: image scores, (B,).
        anomaly_map: final map (A₂ + w · A₁) / σ̂(y), (B, 1, h, w); h = w = ``maps.crop`` when cropping, else H.
        reconstruction: mean stage-2 posterior sample, (B, 3, H, W).
        stage1_map: the raw stage-1 map A₁, (B, 1, H, W), or None for single-stage sampling.
        mask: the stage-2 mask m, (B, 1, H, W), or None.
    """

    image_ids: list[str]
    score: torch.Tensor
    anomaly_map: torch.Tensor
    reconstruction: torch.Tensor
    stage1_map: torch.Tensor | None
    mask: torch.Tensor | None


class AnomalyScorer:
    """Composes the prior, the posterior sampler, the difference map and the image score.

    Args:
        denoiser: ε_θ(x_t, t) of the prior, on the device of the inputs; with per-position priors a sequence
            of T of them, one per tile position in the grid's order.
        prior: the prior's config (schedule and image size).
        sampler, map_cfg, score_cfg: the method's settings.
        backbone: perceptual backbone, or None for pixel-only maps.
        mask_threshold: the stage-1 mask threshold τ, as decided by
            :func:`~mdps_ray.method.calibration.resolve_mask_threshold` (required by two-stage modes).
        backbone_digest: digest of the backbone weights file (provenance, recorded in run.json).
        tiling: score by tiles of the image read at ``tiling.read_size`` (None or disabled: the whole image).
        tile_stride: the tiles' step (``MdpsConfig.tile_stride``), with tiling.
        level_model: the fitted σ̂(y) (``Calibration.level_model``); None leaves the maps raw.
    """

    def __init__(
        self,
        denoiser: Denoiser | Sequence[Denoiser],
        prior: PriorConfig,
        sampler: SamplerConfig,
        map_cfg: MapConfig,
        score_cfg: ScoreConfig,
        backbone: Backbone | None,
        mask_threshold: float | None = None,
        backbone_digest: str = "",
        tiling: TilingConfig | None = None,
        tile_stride: int | None = None,
        level_model: maps.LevelModel | None = None,
    ) -> None:
        self.prior = prior
        self.sampler = sampler
        self.map_cfg = map_cfg
        self.score_cfg = score_cfg
        self.backbone = backbone
        self.mask_threshold = mask_threshold
        self.level_model = level_model  # σ̂(y)'s coefficients and range (calibration.json), or None
        self.backbone_digest = backbone_digest  # provenance of the perceptual weights ("" for none/random)
        self.alpha_bars = alpha_bars(prior)
        self.tiling = tiling if tiling is not None and tiling.enabled else None
        if self.tiling is not None and not isinstance(self.tiling.read_size, int):
            raise ValueError("expected tiling.read_size in pixels for the scorer, got native: resolve it from the "
                             "training images first (mdps_ray.data.native.resolve_read_size)")
        self.grid = None if self.tiling is None else TileGrid(
            self.read_size, self.read_size, prior.image_size,
            tile_stride or max(1, 3 * prior.image_size // 4), self.tiling.seams)
        self.denoiser: Denoiser | None = None if isinstance(denoiser, Sequence) else denoiser
        self.position_denoisers: list[Denoiser] = list(denoiser) if isinstance(denoiser, Sequence) else []
        self._check_priors()

    def _check_priors(self) -> None:
        """One ε_θ, or one per tile position exactly when ``tiling.prior="per_position"``."""
        per_position = self.grid is not None and self.tiling is not None and self.tiling.prior == "per_position"
        want = len(self.grid) if per_position and self.grid is not None else 1
        got = len(self.position_denoisers) or 1
        if per_position != bool(self.position_denoisers) or got != want:
            kind = "per_position" if per_position else "shared (or tiling off)"
            raise ValueError(f"expected {want} prior(s) for tiling.prior {kind}, got {got}; "
                             "score with the tiling settings the model was trained with")

    @property
    def read_size(self) -> int:
        """The side of the images :meth:`score` takes, and of the maps it returns."""
        if self.tiling is None or not isinstance(self.tiling.read_size, int):
            return self.prior.image_size
        return self.tiling.read_size

    # -- one pass -------------------------------------------------------------------------
    def run_stage(
        self,
        y: torch.Tensor,
        image_ids: list[str],
        stage: StageConfig,
        name: str,
        mask: torch.Tensor | None = None,
    ) -> StageOutput:
        """n posterior samples per image and their mean difference map.

        Args:
            y: images in [−1, 1], (B, 3, H, W).
            image_ids: B ids (the per-image noise keys).
            stage: start step, stride, ρ, n.
            name: stage name mixed into the noise keys ("stage1", "stage2").
            mask: (B, 1, H, W) stage-2 mask or None.
        """
        self.check_images(y, image_ids)
        if self.grid is not None:  # each tile is one more image of the prior's size; its key names its place
            tile_mask = None if mask is None else self.grid.cut(mask)
            out = self._sample_stage(self.grid.cut(y), self.grid.tile_ids(image_ids), stage, name, tile_mask)
            return StageOutput(self.grid.stitch(out.anomaly_map), self.grid.stitch(out.reconstruction))
        return self._sample_stage(y, image_ids, stage, name, mask)

    def _sample_stage(self, y: torch.Tensor, image_ids: list[str], stage: StageConfig, name: str,
                      mask: torch.Tensor | None) -> StageOutput:
        """:meth:`run_stage` on prior-sized images (whole images, or the tiles of some)."""
        n = stage.n_samples
        process = ReverseProcess(
            alpha_bars=self.alpha_bars,
            noise_level=stage.start_step,
            timesteps=tuple(schedule.reverse_timesteps(stage.start_step, stage.stride, self.sampler.alignment)),
            eta=self.sampler.eta,
            rho=stage.rho,
            guidance_norm=self.sampler.guidance_norm,
            n_samples=n,
        )
        noise = RowNoise(sample_seeds(self.sampler.seed, image_ids, n, name), y.device)
        rows = y.repeat_interleave(n, dim=0)
        row_mask = None if mask is None else mask.repeat_interleave(n, dim=0)
        denoiser = self.denoiser if self.denoiser is not None else by_position(self.position_denoisers, n)
        x0 = sample_posterior(denoiser, rows, process, noise, row_mask, self.sampler.masked_sampler)
        with torch.no_grad():
            amap = self.difference_map(x0, y, n)
        return StageOutput(anomaly_map=amap, reconstruction=maps.mean_over_samples(x0.detach(), n))

    def difference_map(self, x0: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
        """Blurred, scaled difference map of n samples per image, averaged: (B·n,…) → (B, 1, H, W)."""
        cfg = self.map_cfg
        rows = y.repeat_interleave(n, dim=0)
        pixel = maps.pixel_distance(x0, rows)
        if self.backbone is None:
            combined = pixel
        else:
            feats_y = [f.repeat_interleave(n, dim=0) for f in self.backbone.features(y)]
            feature = self.backbone.distance(self.backbone.features(x0), feats_y, (int(y.shape[-2]), int(y.shape[-1])))
            combined = maps.combine(feature, pixel, cfg.pixel_weight, cfg.weighting, n)
        amap = maps.mean_over_samples(combined, n)
        if cfg.blur_sigma > 0:
            amap = maps.gaussian_blur(amap, cfg.blur_sigma)
        return cfg.scale * amap

    # -- the method ---------------------------------------------------------------------
    def stage1(self, y: torch.Tensor, image_ids: list[str]) -> StageOutput:
        """The stage-1 (unmasked) pass: its raw map A₁, (B, 1, H, W), and mean posterior sample; :meth:`mask_evidence`
        turns it into what the mask threshold is fitted on and compared with."""
        return self.run_stage(y, image_ids, self.sampler.stage1, "stage1")

    def expected_level(self, y: torch.Tensor, first: StageOutput,
                       level_model: maps.LevelModel | None = None) -> torch.Tensor | None:
        """σ̂(y) of each image, (B,), from ``level_model`` or the scorer's; None for raw maps (``maps.normalise
        ="none"``, or no level model fitted yet). ``first`` is the image's first pass (stage 1, or the single
        stage): its map says which pixels are ordinary, its posterior mean stands in for the others."""
        model = level_model if level_model is not None else self.level_model
        if self.map_cfg.normalise == "none" or model is None:
            return None
        phi = maps.acquisition_features(y, first.anomaly_map, first.reconstruction, model.features)
        return maps.expected_level(phi, model)

    def mask_evidence(self, stage1: StageOutput, y: torch.Tensor,
                      level_model: maps.LevelModel | None = None) -> torch.Tensor:
        """A₁ / σ̂(y), (B, 1, H, W): the values the stage-1 mask threshold is fitted on and applied to."""
        level = self.expected_level(y, stage1, level_model)
        return stage1.anomaly_map if level is None else maps.relative_to_level(stage1.anomaly_map, level)

    def score(
        self,
        y: torch.Tensor,
        image_ids: list[str],
        mask_threshold: float | None = None,
        stage1: StageOutput | None = None,
        level_model: maps.LevelModel | None = None,
    ) -> ScoreResult:
        """Score a batch: stage 1 → mask → stage 2 (or the single stage when the mask mode is none).

        ``mask_threshold`` replaces the scorer's τ for this call (calibration scores its normals with
        the τ it just fitted, the in-process transductive pass with the set's τ; both resolved by
        ``resolve_mask_threshold`` first); ``stage1`` reuses the stage-1 pass made earlier for these images;
        ``level_model`` replaces the scorer's level model (calibration scores with the one it just fitted).
        """
        mode = self.sampler.mask.mode
        mask = None
        if mode == "none":
            stage1 = None
        else:
            threshold = mask_threshold if mask_threshold is not None else self.mask_threshold
            if threshold is None:
                raise ValueError(
                    f"expected a stage-1 mask threshold for mask mode {mode!r}, got none; "
                    "calibrate the model (calibration.json) or set sampler.mask.threshold"
                )
            if stage1 is None:
                stage1 = self.stage1(y, image_ids)
            mask = masking.binary_mask(self.mask_evidence(stage1, y, level_model), threshold)
        out = self.run_stage(y, image_ids, self.sampler.stage2, "stage2", mask)
        final = out.anomaly_map
        level = self.expected_level(y, out if stage1 is None else stage1, level_model)
        stage1_map = None if stage1 is None else stage1.anomaly_map
        if stage1_map is not None:
            final = maps.fuse_stages(final, stage1_map, self.map_cfg.stage1_weight)
        if level is not None:
            final = maps.relative_to_level(final, level)
        if self.map_cfg.crop is not None:
            final = maps.center_crop(final, self.map_cfg.crop)
        s = scores.image_score(final, self.score_cfg.method, self.score_cfg.k, self.score_cfg.fraction)
        return ScoreResult(list(image_ids), s, final, out.reconstruction, stage1_map, mask)

    def check_images(self, y: torch.Tensor, image_ids: list[str]) -> None:
        """Raise ValueError naming expected and received values for malformed input."""
        size = self.read_size
        expected = f"(B, 3, {size}, {size})"
        if y.ndim != 4 or y.shape[1] != 3 or tuple(y.shape[-2:]) != (size, size):
            raise ValueError(f"expected images of shape {expected}, got {tuple(y.shape)}")
        if len(image_ids) != y.shape[0]:
            raise ValueError(f"expected {y.shape[0]} image ids, got {len(image_ids)}")
        lo, hi = torch.stack(torch.aminmax(y.detach())).tolist()  # one host read: NaN and ±Inf reach the extremes
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("expected finite pixel values, got NaN or Inf")
        if lo < -1.0 - 1e-4 or hi > 1.0 + 1e-4:
            raise ValueError(f"expected pixel values in [-1, 1], got range [{lo:.3g}, {hi:.3g}]")
