"""The Python API: load a prior, build a scorer, score images.

from mdps_ray.api import Detector
det = Detector.load("runs/bottle/model")                 # prior + calibration + its config
result = det.score(["a.png", "b.png"])                   # or a (B, 3, H, W) tensor in [−1, 1]
result.score, result.anomaly_map, det.is_anomalous(result)   # maps on the input's pixel grid
result.prior.anomaly_map                                  # the same maps on the prior's S × S grid
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from mdps_ray.config.method import ConfigError, MdpsConfig
from mdps_ray.config.overrides import apply_overrides
from mdps_ray.core.maps import to_input_grid
from mdps_ray.data.images import decode_image, image_size
from mdps_ray.method.calibration import Calibration, is_anomalous, resolve_mask_threshold, stale_calibration
from mdps_ray.method.scorer import AnomalyScorer, ScoreResult
from mdps_ray.models.backbones import build_backbone
from mdps_ray.models.runtime import check_device, prepare_unet, unet_denoiser
from mdps_ray.storage.checkpoints import load_prior
from mdps_ray.storage.promotion import resolve_model
from mdps_ray.storage.uris import read_bytes
from mdps_ray.storage.weights import load_backbone_weights


def build_scorer(
    unet: UNet2DModel | Sequence[UNet2DModel],
    config: MdpsConfig,
    device: str | torch.device = "cpu",
    calibration: Calibration | None = None,
    storage_options: dict[str, Any] | None = None,
    transductive_threshold: float | None = None,
) -> AnomalyScorer:
    """An :class:`AnomalyScorer` on ``device``; its ``backbone_digest`` names the weights it loaded.

    The stage-1 mask threshold comes from :func:`~mdps_ray.method.calibration.resolve_mask_threshold`
    (explicit config > ``transductive_threshold`` > ``calibration``). ``unet`` is the prior, or the T
    per-position priors in tile order (``tiling.prior="per_position"``).
    """
    device = torch.device(device)
    check_device(device)
    state, backbone_digest = load_backbone_weights(config.maps.backbone, config.maps.backbone_weights, storage_options)
    backbone = build_backbone(config.maps.backbone, state)
    if isinstance(backbone, torch.nn.Module):
        backbone.to(device)
    rt = config.runtime
    nets = [unet] if isinstance(unet, UNet2DModel) else list(unet)
    denoisers = [unet_denoiser(prepare_unet(u, device, rt.channels_last, rt.compile, rt.precision, rt.tf32),
                               rt.precision, rt.channels_last) for u in nets]
    calibrated = calibration.mask_threshold if calibration is not None else None
    threshold = resolve_mask_threshold(config.sampler.mask, transductive_threshold, calibrated)
    denoiser = denoisers[0] if isinstance(unet, UNet2DModel) else denoisers
    level_model = calibration.level_model if calibration is not None else None
    return AnomalyScorer(denoiser, config.prior, config.sampler, config.maps, config.score, backbone, threshold,
                         backbone_digest, config.tiling, config.tile_stride, level_model)


@dataclass(frozen=True)
class Detection:
    """:meth:`Detector.score`'s output: maps on each input's own pixel grid, the scorer's output on the prior's.

    Attributes:
        image_ids: B ids, in input order.
        score: image scores, (B,).
        anomaly_maps: B maps (1, H_i, W_i), bilinearly upsampled from the prior's S × S grid to
            image i's H_i × W_i (with ``maps.crop`` c: the centre c/S of it).
        prior: the :class:`ScoreResult` on the prior's grid (maps, reconstruction, stage-1 map, mask).
    """

    image_ids: list[str]
    score: torch.Tensor
    anomaly_maps: list[torch.Tensor]
    prior: ScoreResult

    @property
    def anomaly_map(self) -> torch.Tensor:
        """The maps as one (B, 1, H, W) tensor; inputs of different sizes need :attr:`anomaly_maps`."""
        sizes = {tuple(m.shape) for m in self.anomaly_maps}
        if len(sizes) > 1:
            raise ValueError(f"expected inputs of one size to stack their maps, got sizes {sorted(sizes)}; "
                             "use .anomaly_maps (one map per image)")
        return torch.stack(self.anomaly_maps)

    @property
    def reconstruction(self) -> torch.Tensor:
        """Mean stage-2 posterior sample on the prior's grid, (B, 3, S, S)."""
        return self.prior.reconstruction


@dataclass
class Detector:
    """A loaded prior with its scorer, configuration and calibration."""

    scorer: AnomalyScorer
    config: MdpsConfig
    model_digest: str
    backbone_digest: str
    calibration: Calibration | None
    device: torch.device

    @classmethod
    def load(
        cls,
        model_uri: str,
        config: MdpsConfig | None = None,
        device: str | torch.device = "cpu",
        storage_options: dict[str, Any] | None = None,
        overrides: Sequence[str] | Mapping[str, Any] = (),
        check_calibration: bool = True,
        transductive_threshold: float | None = None,
    ) -> Detector:
        """Load a model directory.

        ``config`` replaces the config stored with the model; ``overrides`` (``--set`` items or a patch
        mapping, :func:`~mdps_ray.config.overrides.apply_overrides`)
        are applied on top. The prior part always comes from the model. With ``check_calibration``
        a calibration fitted with other sampler/maps/score settings than the resulting ones warns
        (off when recalibrating, which replaces it). ``transductive_threshold`` is the scored set's
        τ from a transductive first pass (mask mode ``transductive``).
        """
        model_uri = resolve_model(model_uri, storage_options)  # a promoted model: its current version
        loaded = load_prior(model_uri, storage_options)
        cfg = loaded.config if config is None else config.model_copy(update={"prior": loaded.config.prior})
        cfg = apply_overrides(cfg, overrides)
        if cfg.prior != loaded.config.prior:
            raise ConfigError("expected no prior.* overrides at scoring time: the prior is fixed by the model")
        cal = loaded.calibration
        stale = stale_calibration(cal, cfg, model_uri) if check_calibration else None
        if stale:
            warnings.warn(stale, UserWarning, stacklevel=2)
        scorer = build_scorer(loaded.unet, cfg, device, cal, storage_options, transductive_threshold)
        return cls(scorer, cfg, loaded.digest, scorer.backbone_digest, cal, torch.device(device))

    def score(self, images: torch.Tensor | Sequence[str], image_ids: Sequence[str] | None = None) -> Detection:
        """Score a tensor (B, 3, H, W) in [−1, 1] or a list of image paths/URIs (any sizes): each is
        resized to the read size S × S (the prior's side, or tiling.read_size), scored, and its map brought back
        to its own size."""
        side = self.config.read_size
        if isinstance(images, torch.Tensor):
            hw = [tuple(images.shape[-2:])] * len(images)
            y = images if hw[0] == (side, side) else F.interpolate(
                images.float(), size=(side, side), mode="bilinear", antialias=True, align_corners=False)
            ids = list(image_ids) if image_ids is not None else [str(i) for i in range(len(y))]
        else:
            blobs = [read_bytes(str(u)) for u in images]
            hw = [image_size(b) for b in blobs]
            y = torch.stack([decode_image(b, side) for b in blobs])
            ids = list(image_ids) if image_ids is not None else [Path(str(u)).name for u in images]
        result = self.scorer.score(y.to(self.device), ids)
        maps = [to_input_grid(result.anomaly_map[i: i + 1], (int(h), int(w)), side)[0]
                for i, (h, w) in enumerate(hw)]
        return Detection(result.image_ids, result.score, maps, result)

    def is_anomalous(self, result: ScoreResult | Detection) -> torch.Tensor:
        """Scores above the calibrated image threshold, (B,) bool."""
        if self.calibration is None:
            raise ValueError("expected a calibrated model (calibration.json) to threshold scores, got none")
        return is_anomalous(result.score, self.calibration.score_threshold)

    def p_values(self, result: ScoreResult | Detection) -> torch.Tensor:
        """Conformal p-values of the scores against the calibration normals, (B,) float64: about uniform for
        normal images, as small as 1/(n + 1) for an image above every normal score."""
        values = None if self.calibration is None else self.calibration.p_values(result.score)
        if values is None:
            raise ValueError("expected a calibration with its normal scores (calibration.json version 2) for "
                             "p-values, got none or an older one; recalibrate with `mdps calibrate`")
        return values
