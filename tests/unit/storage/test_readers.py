"""A committed results/ folder opens in the tools users have, with the same rows and types."""

from __future__ import annotations

from pathlib import Path

from mdps_ray.storage.results import rows_to_table
from mdps_ray.storage.runs import RunPaths, commit
from tests.helpers.readers import read_everywhere


def _commit(tmp_path: Path) -> Path:
    rows = [{"run_id": "r", "image_id": f"{c}/{i}", "category": c, "status": "ok", "score": float(i),
             "label": i % 2, "dt": dt} for c in ("bottle", "cable") for i in range(3) for dt in ("2026-12-01",)]
    commit(RunPaths(str(tmp_path), "r"), rows_to_table(rows))
    return tmp_path / "r" / "results"


def test_pandas_pyarrow_duckdb_and_polars_read_the_same_rows(tmp_path: Path) -> None:
    results = _commit(tmp_path)
    expected = sorted((f"{c}/{i}", c, float(i)) for c in ("bottle", "cable") for i in range(3))
    frames = read_everywhere(results)
    for name, df in frames.items():
        got = sorted(zip(df["image_id"], df["category"].astype(str), df["score"], strict=True))
        assert got == expected, name
        assert str(df["label"].dtype).startswith("int"), name
        assert list(df.columns) == list(frames["pandas"].columns), name
