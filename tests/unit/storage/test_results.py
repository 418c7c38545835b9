"""Result rows: the v2 schema, and v1 files (before backbone_digest) still read."""

from __future__ import annotations

import pyarrow as pa

from mdps_ray.storage.results import RESULT_SCHEMA, RESULT_SCHEMA_V1, check_schema, rows_to_table, upgrade


def test_v1_tables_upgrade_to_the_current_schema_with_a_null_backbone_digest() -> None:
    row = {f.name: None for f in RESULT_SCHEMA_V1} | {"image_id": "a", "status": "ok", "score": 1.0}
    v1 = pa.Table.from_pylist([row], schema=RESULT_SCHEMA_V1)
    up = upgrade(v1)
    check_schema(up)
    assert up.column("backbone_digest").to_pylist() == [None]
    assert up.column("score").to_pylist() == [1.0]
    assert upgrade(rows_to_table([row])).schema.equals(RESULT_SCHEMA)
    assert RESULT_SCHEMA.names.index("backbone_digest") == RESULT_SCHEMA.names.index("config_hash") + 1
