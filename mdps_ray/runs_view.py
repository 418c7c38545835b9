"""``mdps runs``: committed runs under an output prefix, as text tables."""

from __future__ import annotations

from typing import Any

from mdps_ray.io.runs import RunPaths, committed_runs, exists, read_json


def list_runs(out: str, storage_options: dict[str, Any] | None = None) -> str:
    """One line per committed run: id, finished, images, errors, image AUROC, model, config."""
    if not exists(out, storage_options):
        raise FileNotFoundError(f"expected an output prefix (the --out of `mdps score`) at {out}, found nothing there")
    runs = committed_runs(out, storage_options)
    if not runs:
        return f"no committed runs under {out}"
    lines = [f"{'run_id':28s} {'finished (UTC)':20s} {'images':>7s} {'errors':>6s} {'img AUROC':>9s}  model / config"]
    for run_id in runs:
        paths = RunPaths(out, run_id)
        rec = read_json(paths.run_json, storage_options)
        auroc = read_json(paths.metrics, storage_options).get("overall", {}).get("image_auroc")
        lines.append(f"{run_id:28s} {rec['finished_at'][:19]:20s} {rec['counts']['rows']:7d} "
                     f"{rec['counts']['errors']:6d} {'–' if auroc is None else f'{auroc:.4f}':>9s}  "
                     f"{rec['model_digest']} / {rec['config_hash']}")
    return "\n".join(lines)


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
    for cat, m in sorted(metrics.get("per_category", {}).items()):
        shown = ", ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float) and not k.startswith("n_"))
        lines.append(f"  {cat}: {int(m.get('n_images', 0))} images; {shown}")
    if rec.get("drift"):
        lines.append("  drift vs calibration: " + ", ".join(f"{k}={v:.3g}" for k, v in rec["drift"].items()))
    return "\n".join(lines)
