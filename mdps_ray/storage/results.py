"""Per-image result rows: the versioned Arrow schema and Parquet parts (maps: ``storage/maps.py``)."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mdps_ray.storage.uris import read_bytes

RESULTS_SCHEMA_VERSION = 5
_V1_FIELDS: list[tuple[str, pa.DataType]] = [
    ("run_id", pa.string()),
    ("image_id", pa.string()),
    ("uri", pa.string()),
    ("category", pa.string()),
    ("split", pa.string()),
    ("defect_type", pa.string()),
    ("label", pa.int8()),
    ("score", pa.float64()),
    ("is_anomalous", pa.bool_()),
    ("map_uri", pa.string()),
    ("map_max", pa.float64()),
    ("map_mean", pa.float64()),
    ("anomalous_area_fraction", pa.float64()),
    ("model_digest", pa.string()),
    ("config_hash", pa.string()),
    ("content_key", pa.string()),
    ("mask_uri", pa.string()),
    ("seed", pa.int64()),
    ("n_samples", pa.int32()),
    ("seconds", pa.float64()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("dt", pa.string()),
]


# v2 adds the perceptual backbone's weights digest beside the model digest (provenance).
# v3 has v2's columns; its map_uri addresses a member of the batch's map chunk, ``<run>/maps/<part>.npz#<key>``
# (storage/maps.py: read it with ``read_map``), where v1/v2 rows name one ``.npy`` object per image.
RESULT_SCHEMA_V1 = pa.schema(_V1_FIELDS, metadata={"mdps_ray.results_schema_version": "1"})
_AT = [name for name, _ in _V1_FIELDS].index("config_hash") + 1
RESULT_SCHEMA_V2 = pa.schema([*_V1_FIELDS[:_AT], ("backbone_digest", pa.string()), *_V1_FIELDS[_AT:]],
                             metadata={"mdps_ray.results_schema_version": "2"})
RESULT_SCHEMA_V3 = RESULT_SCHEMA_V2.with_metadata({"mdps_ray.results_schema_version": "3"})
# v4 adds p_value after is_anomalous: the image's conformal p-value against the calibration normals,
# (1 + #{normal scores >= score}) / (n + 1); null without a calibration or with one that predates stored scores.
_AT_P = RESULT_SCHEMA_V3.names.index("is_anomalous") + 1
RESULT_SCHEMA_V4 = RESULT_SCHEMA_V3.insert(_AT_P, pa.field("p_value", pa.float64())).with_metadata(
    {"mdps_ray.results_schema_version": "4"})
# v5 adds the input's acquisition statistics after map_mean (core/acquisition.py: brightness, contrast, sharpness
# of the image as scored), which the nightly drift compares with the calibration normals'; null in older rows.
ACQUISITION_COLUMNS = ("input_brightness", "input_contrast", "input_sharpness")
_AT_A = RESULT_SCHEMA_V4.names.index("map_mean") + 1
RESULT_SCHEMA = pa.schema([*list(RESULT_SCHEMA_V4)[:_AT_A], *(pa.field(c, pa.float64()) for c in ACQUISITION_COLUMNS),
                           *list(RESULT_SCHEMA_V4)[_AT_A:]],
                          metadata={"mdps_ray.results_schema_version": str(RESULTS_SCHEMA_VERSION)})


def upgrade(table: pa.Table) -> pa.Table:
    """A table of any published result schema version as the current one (v1 rows: no backbone digest; v1-v3
    rows: no p-value; v1-v4 rows: no acquisition statistics; v2 rows name ``.npy`` maps that read through the
    same ``read_map`` as v3's chunks)."""
    bare = table.schema.remove_metadata()
    if bare.equals(RESULT_SCHEMA_V1.remove_metadata()):
        table = table.add_column(_AT, RESULT_SCHEMA_V2.field("backbone_digest"), pa.nulls(table.num_rows, pa.string()))
        bare = table.schema.remove_metadata()
    if bare.equals(RESULT_SCHEMA_V3.remove_metadata()):
        table = table.add_column(_AT_P, RESULT_SCHEMA.field("p_value"), pa.nulls(table.num_rows, pa.float64()))
        bare = table.schema.remove_metadata()
    if bare.equals(RESULT_SCHEMA_V4.remove_metadata()):
        for k, name in enumerate(ACQUISITION_COLUMNS):
            table = table.add_column(_AT_A + k, RESULT_SCHEMA.field(name), pa.nulls(table.num_rows, pa.float64()))
    return table.replace_schema_metadata(RESULT_SCHEMA.metadata)


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows → a table of exactly :data:`RESULT_SCHEMA` (missing fields are null); checked on write."""
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in RESULT_SCHEMA} for r in rows], schema=RESULT_SCHEMA)


def check_schema(table: pa.Table) -> None:
    """Raise if a table does not carry the published result schema."""
    if not table.schema.remove_metadata().equals(RESULT_SCHEMA.remove_metadata()):
        raise ValueError(f"expected the result schema v{RESULTS_SCHEMA_VERSION}, got {table.schema}")


def table_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def read_table(uri: str, storage_options: dict[str, Any] | None = None) -> pa.Table:
    return pq.read_table(io.BytesIO(read_bytes(uri, storage_options)))


def part_name(image_ids: list[str]) -> str:
    """A part file name determined by the image ids it holds (a retried batch rewrites the same file)."""
    return "part-" + hashlib.sha256("\n".join(sorted(image_ids)).encode()).hexdigest()[:20] + ".parquet"


def text_or_none(value: Any) -> str | None:
    """A string cell of a numpy batch: None, NaN (how some batches carry nulls) and '' become None."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return None
    return str(value)
