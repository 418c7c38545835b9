"""Published contracts in ``schemas/``: JSON Schema of every public config model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mdps_ray.config import MapConfig, MdpsConfig, PriorConfig, SamplerConfig, ScoreConfig, TrainConfig

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"
SCHEMA_VERSION = 1

PUBLIC_CONFIGS: dict[str, type[BaseModel]] = {
    "mdps_config": MdpsConfig,
    "prior_config": PriorConfig,
    "train_config": TrainConfig,
    "sampler_config": SamplerConfig,
    "map_config": MapConfig,
    "score_config": ScoreConfig,
}


def render_schemas() -> dict[str, dict[str, Any]]:
    """{file name: JSON Schema} for every public config, versioned in the file name."""
    return {
        f"{name}.v{SCHEMA_VERSION}.schema.json": model.model_json_schema() for name, model in PUBLIC_CONFIGS.items()
    }


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Regenerate the schema files; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in render_schemas().items():
        path = directory / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths
