"""Published contracts in ``schemas/``: JSON Schema of every public config model and of the job
configs, and the Arrow schemas of the Parquet outputs (results and manifest)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from mdps_ray.config.jobs import ScoreJobConfig, TrainJobConfig
from mdps_ray.config.method import MapConfig, MdpsConfig, PriorConfig, SamplerConfig, ScoreConfig, TrainConfig
from mdps_ray.data.manifest import MANIFEST_SCHEMA
from mdps_ray.storage.results import (
    RESULT_SCHEMA,
    RESULT_SCHEMA_V1,
    RESULT_SCHEMA_V2,
    RESULT_SCHEMA_V3,
    RESULT_SCHEMA_V4,
    RESULTS_SCHEMA_VERSION,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA_VERSION = 1

PUBLIC_CONFIGS: dict[str, type[BaseModel]] = {
    "mdps_config": MdpsConfig,
    "prior_config": PriorConfig,
    "train_config": TrainConfig,
    "sampler_config": SamplerConfig,
    "map_config": MapConfig,
    "score_config": ScoreConfig,
    "score_job": ScoreJobConfig,
    "train_job": TrainJobConfig,
}


def arrow_schema_json(schema: pa.Schema) -> dict[str, Any]:
    """A stable JSON description of an Arrow schema: field names, types, nullability."""
    return {"fields": [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]}


def render_schemas() -> dict[str, dict[str, Any]]:
    """{file name: schema} for every public config and Parquet output, versioned in the file name."""
    out = {f"{name}.v{SCHEMA_VERSION}.schema.json": m.model_json_schema() for name, m in PUBLIC_CONFIGS.items()}
    out["results.v1.arrow.json"] = arrow_schema_json(RESULT_SCHEMA_V1)  # still read (upgraded on read)
    out["results.v2.arrow.json"] = arrow_schema_json(RESULT_SCHEMA_V2)  # still read (upgraded on read)
    out["results.v3.arrow.json"] = arrow_schema_json(RESULT_SCHEMA_V3)  # still read (upgraded on read)
    out["results.v4.arrow.json"] = arrow_schema_json(RESULT_SCHEMA_V4)  # still read (upgraded on read)
    out[f"results.v{RESULTS_SCHEMA_VERSION}.arrow.json"] = arrow_schema_json(RESULT_SCHEMA)
    out["manifest.v1.arrow.json"] = arrow_schema_json(MANIFEST_SCHEMA)
    return out


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Regenerate the schema files; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in render_schemas().items():
        path = directory / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths
