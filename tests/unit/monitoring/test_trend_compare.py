"""Trend rows from run.json (new and old), and the flips of two runs' decisions."""

from __future__ import annotations

import pyarrow as pa
import pytest

from mdps_ray.monitoring.compare import flips, joined, summary
from mdps_ray.monitoring.trend import TREND_SCHEMA, _rows_of


def _night(drifted: bool | None, reference: str | None = "calibration") -> dict:
    return {"images": 10, "errors": 1, "flagged": 2, "score_stats": {"q50": 1.0, "q90": 2.0},
            "reference": reference,
            "drift": {"drifted": drifted, "reasons": ["brightness +0.100, KS p=1e-05"] if drifted else [],
                      "median_p_value": 0.4, "p_value_ks": 0.1,
                      "stats": {"brightness": {"shift": 0.1 if drifted else 0.0}}}}


def test_a_night_row_per_category_with_its_verdict_and_why() -> None:
    rec = {"dt": "2026-12-03", "model_digest": "m", "finished_at": "2026-12-04T01:00:00",
           "night": {"b": _night(True), "a": _night(False), "c": _night(None, reference=None)}}
    rows = _rows_of("r3", rec)
    assert [r["category"] for r in rows] == ["a", "b", "c"] and {r["night"] for r in rows} == {"2026-12-03"}
    assert [r["drifted"] for r in rows] == [False, True, None] and rows[1]["flag_rate"] == pytest.approx(0.2)
    assert rows[1]["drift"].startswith("brightness +0.100") and rows[0]["drift"] == "none"
    assert rows[2]["drift"].startswith("no reference (calibration without acquisition statistics")
    pa.Table.from_pylist([{f.name: r.get(f.name) for f in TREND_SCHEMA} for r in rows], schema=TREND_SCHEMA)


def test_a_run_committed_before_night_summaries_gives_counts_and_no_verdict() -> None:
    rec = {"dt": None, "finished_at": "2026-11-30T23:00:00+00:00", "model_digest": "m",
           "counts": {"rows": 12, "errors": 2}, "score_stats": {"q50": 0.5, "q90": 0.9}}
    [row] = _rows_of("old", rec)
    assert row["night"] == "2026-11-30" and row["images"] == 10 and row["errors"] == 2
    assert row.get("drifted") is None and row["drift"].startswith("no drift summary")


def test_an_empty_night_is_a_row_with_no_images() -> None:
    [row] = _rows_of("r2", {"dt": "2026-12-02", "finished_at": "2026-12-02T03:00:00", "model_digest": "m",
                            "counts": {"rows": 0, "errors": 0}, "night": {}})
    assert row["night"] == "2026-12-02" and row["images"] == 0 and row.get("drifted") is None
    assert row["drift"] == "no images scored this night"


def _run(decisions: dict[str, bool | None], scores: dict[str, float]) -> pa.Table:
    ids = sorted(decisions)
    return pa.table({"image_id": ids, "category": ["c"] * len(ids), "uri": [f"/{i}.png" for i in ids],
                     "score": [scores[i] for i in ids], "is_anomalous": [decisions[i] for i in ids],
                     "p_value": [0.5] * len(ids), "map_uri": pa.array([None] * len(ids), pa.string()),
                     "model_digest": ["d"] * len(ids),
                     "label": pa.array([None] * len(ids), pa.int8())})


def test_flips_in_each_direction_and_images_in_one_run_only() -> None:
    a = _run({"x": False, "y": True, "z": False, "w": None, "only_a": True},
             {"x": 1, "y": 3, "z": 2, "w": 0, "only_a": 5})
    b = _run({"x": True, "y": False, "z": False, "w": True, "only_b": False},
             {"x": 4, "y": 1, "z": 2, "w": 9, "only_b": 0})
    both = joined(a, b)
    assert both.column("image_id").to_pylist() == ["w", "x", "y", "z"]
    flipped = flips(both)
    assert dict(zip(flipped.column("image_id").to_pylist(), flipped.column("direction").to_pylist(),
                    strict=True)) == {"x": "flagged_by_b", "y": "cleared_by_b"}  # w: A had no decision
    facts = summary(a, b, both, flipped, "A", "B")
    assert facts["flagged_by_b"] == facts["cleared_by_b"] == 1 and facts["only_in_a"] == facts["only_in_b"] == 1
    assert facts["per_category"] == {"c": {"images": 4, "flagged_by_b": 1, "cleared_by_b": 1}}
    assert facts["spearman_rho"] == pytest.approx(-1.0)  # ranks w, x, z, y in A; y, z, x, w in B
