"""Runs written before map chunks (results v2: one maps/<key>.npy and recons/<key>.png per image) are still
read by `mdps evaluate`, `mdps report`, `mdps runs`, `mdps trend`, `mdps compare` and ``read_map``, with the same
answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mdps_ray.cli.tables import list_runs
from mdps_ray.config.jobs import ScoreJobConfig
from mdps_ray.monitoring.compare import compare_runs
from mdps_ray.monitoring.trend import trend_table
from mdps_ray.orchestration.score_pipeline import run_score_job
from mdps_ray.storage.maps import read_map, read_recon, save_map
from mdps_ray.storage.results import ACQUISITION_COLUMNS, RESULT_SCHEMA_V2
from mdps_ray.storage.runs import RunPaths, object_key
from mdps_ray.visualization.report import build_report
from mdps_ray.workflows import evaluate_run


def _to_v2_layout(run: Path) -> None:
    """Rewrite a committed run as the v2 writer left it: a map and a reconstruction object per image."""
    paths = RunPaths(str(run.parent), run.name)
    for part in (run / "results").rglob("*.parquet"):
        table = pq.read_table(part)
        uris = []
        for row in table.to_pylist():
            key = object_key(row["image_id"])
            save_map(read_map(row), str(run / "maps" / f"{key}.npy"))
            (run / "recons").mkdir(exist_ok=True)
            read_recon(row["map_uri"], paths.recon_uri(row["image_id"])).save(run / "recons" / f"{key}.png")
            uris.append(str(run / "maps" / f"{key}.npy"))
        table = table.set_column(table.schema.get_field_index("map_uri"), "map_uri", pa.array(uris, pa.string()))
        old = table.drop_columns(["p_value", *ACQUISITION_COLUMNS])  # v2 had no p-values nor input statistics
        pq.write_table(old.cast(RESULT_SCHEMA_V2), part)
    for chunk in (run / "maps").glob("*.npz"):
        chunk.unlink()
    record = json.loads((run / "run.json").read_text())
    del record["night"]  # the per-night summary `mdps trend` reads came later
    (run / "run.json").write_text(json.dumps(record))


def test_a_run_in_the_layout_before_chunks_reads_the_same(ray_local, tiny_model: Path, synthetic_root: Path,
                                                         tmp_path: Path) -> None:
    summary = run_score_job(ScoreJobConfig(model=str(tiny_model), data=str(synthetic_root), out=str(tmp_path)))
    run = Path(summary.run_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    maps = {r["image_id"]: read_map(r) for r in pq.read_table(run / "results").to_pylist()}
    _to_v2_layout(run)
    rows = pq.read_table(run / "results").to_pylist()
    assert all(r["map_uri"].endswith(".npy") for r in rows) and not list((run / "maps").glob("*.npz"))
    for r in rows:
        np.testing.assert_array_equal(read_map(r), maps[r["image_id"]])
    assert evaluate_run(str(run), write=False) == metrics
    report = Path(build_report(str(run), top=2)).read_text()
    assert report.count("data:image/png;base64,") >= 4 and "Traceback" not in report
    assert run.name in list_runs(str(tmp_path))
    [night] = trend_table(str(tmp_path)).to_pylist()
    assert night["images"] == len(rows) and night["drifted"] is None and night["drift"].startswith("no drift summary")
    facts = compare_runs(str(run), str(run), str(tmp_path / "cmp"))
    assert facts["images_compared"] == len(rows) and facts["flipped"] == 0
    assert facts["spearman_rho"] == pytest.approx(1.0)
