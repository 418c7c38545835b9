"""Progress bars and closing summary tables for the command line (stderr bars, stdout tables).

Bars redraw twice a second on a terminal and every 10 s otherwise (logs of `ray job submit`,
CI); ``MDPS_PROGRESS=0`` turns them off.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mdps_ray.storage.runs import RunPaths, committed_runs
from mdps_ray.storage.uris import exists, read_json


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table; floats to 4 decimals, None as '–', numbers right-aligned."""

    def cell(v: Any) -> str:
        if v is None:
            return "–"
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float) or row[i] is None for row in rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        cols = zip(cells, widths, numeric, strict=True)
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in cols).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in text)])


METRIC_COLUMNS = ("n_images", "n_anomalous", "image_auroc", "pixel_auroc", "aupro", "f1_max")


def metrics_table(metrics: dict[str, Any]) -> str:
    """The closing table of a scoring run: one row per category and one for all (``metrics.json``)."""
    parts = [*sorted(metrics.get("per_category", {}).items()), ("all", metrics.get("overall", {}))]
    rows = [[name, *(_number(k, m.get(k)) for k in METRIC_COLUMNS)] for name, m in parts]
    return format_table(["category", *METRIC_COLUMNS], rows)


def _number(key: str, v: Any) -> Any:
    """Counts (``n_*``) as int, metrics as float, absent or NaN as None."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    return int(v) if key.startswith("n_") else float(v)


def list_runs(out: str, storage_options: dict[str, Any] | None = None) -> str:
    """One line per committed run: id, finished, images, errors, image AUROC, model, config."""
    if not exists(out, storage_options):
        raise FileNotFoundError(f"expected an output prefix (the --out of `mdps score`) at {out}, found nothing there")
    runs = committed_runs(out, storage_options)
    if not runs:
        return f"no committed runs under {out}"
    rows = []
    for run_id in runs:
        paths = RunPaths(out, run_id)
        rec = read_json(paths.run_json, storage_options)
        auroc = read_json(paths.metrics, storage_options).get("overall", {}).get("image_auroc")
        rows.append([run_id, rec["finished_at"][:19], rec["counts"]["rows"], rec["counts"]["errors"], auroc,
                     f"{rec['model_digest']} / {rec['config_hash']}"])
    return format_table(["run_id", "finished (UTC)", "images", "errors", "image AUROC", "model / config"], rows)


def describe_run(out: str, run_id: str, storage_options: dict[str, Any] | None = None) -> str:
    """Counts, metrics per category, model, config and timing of one committed run."""
    paths = RunPaths(out, run_id)
    if not exists(paths.success, storage_options):
        raise FileNotFoundError(f"expected a committed run {run_id} under {out}, found none")
    rec, metrics = read_json(paths.run_json, storage_options), read_json(paths.metrics, storage_options)
    lines = [f"run {run_id} at {paths.root}",
             f"  finished {rec['finished_at']} in {rec['seconds']:.1f} s; {rec['counts']['rows']} rows, "
             f"{rec['counts']['errors']} errors",
             f"  model {rec['job']['model']} (digest {rec['model_digest']}), config {rec['config_hash']}",
             f"  data {rec['job']['data']}"]
    lines.append(metrics_table(metrics))
    if rec.get("drift"):
        lines.append("  drift vs calibration: " + ", ".join(f"{k}={v:.3g}" for k, v in rec["drift"].items()))
    return "\n".join(lines)
