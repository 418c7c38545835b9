"""mdps-ray: distributed batch scoring for visual anomaly detection with MDPS (Wu et al., IJCAI 2024).

Public API (imported lazily, so ``import mdps_ray`` has no side effects and stays cheap)::

    from mdps_ray import Detector, MdpsConfig, preset
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Detector": "mdps_ray.api",
    "build_scorer": "mdps_ray.api",
    "MdpsConfig": "mdps_ray.config.method",
    "preset": "mdps_ray.config.presets",
    "AnomalyScorer": "mdps_ray.method.scorer",
    "ScoreResult": "mdps_ray.method.scorer",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mdps_ray' has no attribute {name!r}")
