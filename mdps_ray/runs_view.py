"""``mdps runs``: committed runs under an output prefix, as text tables."""

from __future__ import annotations

from typing import Any

from mdps_ray.io.runs import RunPaths, committed_runs, exists, read_json
from mdps_ray.progress import format_table, metrics_table


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
