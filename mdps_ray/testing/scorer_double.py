"""A zero-cost scorer double: the scoring job's own overhead, measured without the model.

``benchmarks/scale.py`` and the archive-scale tests run the real pipeline (listing, manifest, Ray
Data, actors, staging, commit, reduce) with this in place of :class:`mdps_ray.api.Detector`, so
what they time is the system, not the UNet. Its outputs are deterministic functions of the pixels
(not constants), so a map read back can be checked against the one written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mdps_ray.config.method import MdpsConfig
from mdps_ray.config.overrides import apply_overrides
from mdps_ray.method.calibration import Calibration
from mdps_ray.method.scorer import ScoreResult
from mdps_ray.storage.checkpoints import load_calibration, read_model_meta


def double_map(y: torch.Tensor) -> torch.Tensor:
    """The double's map: |y − the image's mean| averaged over channels, (B, 3, H, W) → (B, 1, H, W)."""
    return (y - y.mean(dim=(1, 2, 3), keepdim=True)).abs().mean(dim=1, keepdim=True)


@dataclass(frozen=True)
class ZeroCostScorer:
    """Scores y ∈ [−1, 1]^(B, 3, H, W) in microseconds: map :func:`double_map`, score its mean, recon y."""

    backbone_digest: str = ""

    def score(self, y: torch.Tensor, image_ids: Sequence[str]) -> ScoreResult:
        amap = double_map(y)
        return ScoreResult(list(image_ids), amap.mean(dim=(1, 2, 3)), amap, y, None, None)


@dataclass(frozen=True)
class ZeroCostDetector:
    """Stands where :class:`mdps_ray.api.Detector` stands in a scoring worker; reads the model's metadata
    (digest, config, calibration) but not its weights."""

    scorer: ZeroCostScorer
    config: MdpsConfig
    model_digest: str
    backbone_digest: str
    calibration: Calibration | None
    device: torch.device

    @classmethod
    def load(cls, model_uri: str, device: str | torch.device = "cpu", storage_options: dict[str, Any] | None = None,
             overrides: Sequence[str] | Mapping[str, Any] = (), **_: Any) -> ZeroCostDetector:
        meta, stored = read_model_meta(model_uri, storage_options)
        cfg = apply_overrides(stored, overrides)
        return cls(ZeroCostScorer(), cfg, meta["weights_digest"], "", load_calibration(model_uri, storage_options),
                   torch.device(device))
