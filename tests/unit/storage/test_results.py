"""Result rows: the v4 schema, and v1 (before backbone_digest) and v3 (before p_value) files still read."""

from __future__ import annotations

import pyarrow as pa

from mdps_ray.storage.results import (
    RESULT_SCHEMA,
    RESULT_SCHEMA_V1,
    RESULT_SCHEMA_V3,
    check_schema,
    rows_to_table,
    upgrade,
)


def test_v1_tables_upgrade_to_the_current_schema_with_a_null_backbone_digest() -> None:
    row = {f.name: None for f in RESULT_SCHEMA_V1} | {"image_id": "a", "status": "ok", "score": 1.0}
    v1 = pa.Table.from_pylist([row], schema=RESULT_SCHEMA_V1)
    up = upgrade(v1)
    check_schema(up)
    assert up.column("backbone_digest").to_pylist() == [None]
    assert up.column("score").to_pylist() == [1.0]
    assert upgrade(rows_to_table([row])).schema.equals(RESULT_SCHEMA)
    assert RESULT_SCHEMA.names.index("backbone_digest") == RESULT_SCHEMA.names.index("config_hash") + 1


def test_v3_tables_upgrade_to_v4_with_a_null_p_value_after_the_decision() -> None:
    row = {f.name: None for f in RESULT_SCHEMA_V3} | {"image_id": "a", "status": "ok", "score": 2.0,
                                                     "is_anomalous": True}
    up = upgrade(pa.Table.from_pylist([row], schema=RESULT_SCHEMA_V3))
    check_schema(up)
    assert up.column("p_value").to_pylist() == [None] and up.column("is_anomalous").to_pylist() == [True]
    assert RESULT_SCHEMA.names.index("p_value") == RESULT_SCHEMA.names.index("is_anomalous") + 1
    v3_again = RESULT_SCHEMA.remove(RESULT_SCHEMA.names.index("p_value"))
    assert v3_again.remove_metadata().equals(RESULT_SCHEMA_V3.remove_metadata())  # v4 is v3 and one column
