"""Recompute the metrics of a committed run from its rows and maps (``mdps evaluate``)."""

from __future__ import annotations

from typing import Any

from mdps_ray.config import MdpsConfig, validate
from mdps_ray.io.runs import RunPaths, exists, read_json, read_results, write_json
from mdps_ray.metrics.reduce import reduce_rows


def evaluate_run(run_dir: str, storage_options: dict[str, Any] | None = None, write: bool = True) -> dict[str, Any]:
    """Metrics per category and overall for a committed run; rewrites its metrics.json."""
    out, _, run_id = run_dir.rstrip("/").rpartition("/")
    paths = RunPaths(out, run_id)
    if not exists(paths.success, storage_options):
        raise FileNotFoundError(f"expected a committed run (with _SUCCESS) at {run_dir}, found none")
    record = read_json(paths.run_json, storage_options)
    cfg = validate(MdpsConfig, record["method"], source=paths.run_json)
    cal = record.get("calibration") or {}
    rows = read_results(paths, storage_options).to_pylist()
    metrics = reduce_rows(rows, cfg.prior.image_size, cfg.maps.crop, cal.get("score_threshold"), storage_options)
    if write:
        write_json(paths.metrics, metrics, storage_options)
    return metrics
