"""Result rows: the v5 schema, and v1 (before backbone_digest), v3 (before p_value) and v4 (before the acquisition
statistics) files still read."""

from __future__ import annotations

import pyarrow as pa

from mdps_ray.storage.results import (
    RESULT_SCHEMA,
    RESULT_SCHEMA_V1,
    RESULT_SCHEMA_V3,
    RESULT_SCHEMA_V4,
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
    v3_again = RESULT_SCHEMA_V4.remove(RESULT_SCHEMA_V4.names.index("p_value"))
    assert v3_again.remove_metadata().equals(RESULT_SCHEMA_V3.remove_metadata())  # v4 is v3 and one column


def test_v4_tables_upgrade_to_v5_with_null_acquisition_statistics_after_map_mean() -> None:
    row = {f.name: None for f in RESULT_SCHEMA_V4} | {"image_id": "a", "status": "ok", "score": 2.0, "p_value": 0.5,
                                                     "map_mean": 0.25}
    up = upgrade(pa.Table.from_pylist([row], schema=RESULT_SCHEMA_V4))
    check_schema(up)
    at = RESULT_SCHEMA.names.index("map_mean")
    assert RESULT_SCHEMA.names[at + 1:at + 4] == ["input_brightness", "input_contrast", "input_sharpness"]
    assert [up.column(c).to_pylist() for c in RESULT_SCHEMA.names[at + 1:at + 4]] == [[None]] * 3
    assert up.column("p_value").to_pylist() == [0.5] and up.column("map_mean").to_pylist() == [0.25]
    v4_again = RESULT_SCHEMA.remove(at + 3).remove(at + 2).remove(at + 1)
    assert v4_again.remove_metadata().equals(RESULT_SCHEMA_V4.remove_metadata())  # v5 is v4 and three columns
