"""The tools users open results/ with: pandas, pyarrow (table and dataset), DuckDB, polars."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq


def read_everywhere(results: Path) -> dict[str, pd.DataFrame]:
    """results/ as each tool reads it, converted to pandas frames for comparison."""
    return {
        "pandas": pd.read_parquet(results),
        "pyarrow": pq.read_table(results).to_pandas(),
        "dataset": ds.dataset(results, format="parquet").to_table().to_pandas(),
        "duckdb": duckdb.sql(f"select * from read_parquet('{results}/**/*.parquet')").df(),
        "polars": pl.read_parquet(f"{results}/**/*.parquet").to_pandas(),
    }
