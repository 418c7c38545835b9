"""``mdps trend``: night by night, from each committed run's ``run.json`` (never from its rows).

One row per (night, run, category): images, errors, flags, score quantiles, the median p-value and the
drift of the night's acquisition statistics against the calibration normals, which the scoring job
computed when it committed the run (``run.json``'s ``night``; ``metrics/drift.py``). A night is the run's
``dt`` (``--incremental``/``date``), else the date it finished. Runs committed before this summary
existed give a row with their counts and score quantiles and no drift verdict.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from mdps_ray.core.acquisition import ACQUISITION_STATS
from mdps_ray.storage.results import table_bytes
from mdps_ray.storage.runs import READ_THREADS, RunPaths, committed_runs
from mdps_ray.storage.uris import exists, join, read_json, write_bytes
from mdps_ray.visualization.plots import night_panels

TREND_SCHEMA = pa.schema([
    ("night", pa.string()), ("run_id", pa.string()), ("category", pa.string()), ("model_digest", pa.string()),
    ("images", pa.int64()), ("errors", pa.int64()), ("flagged", pa.int64()), ("flag_rate", pa.float64()),
    ("score_q50", pa.float64()), ("score_q90", pa.float64()), ("median_p_value", pa.float64()),
    ("p_value_ks", pa.float64()),
    *((f"{s}_shift", pa.float64()) for s in ACQUISITION_STATS),
    ("drifted", pa.bool_()), ("drift", pa.string()), ("finished_at", pa.string()),
])


def _rows_of(run_id: str, rec: dict[str, Any]) -> list[dict[str, Any]]:
    """A run's trend rows from its ``run.json`` (one per category; one for the run when it predates ``night``)."""
    base = {"night": rec.get("dt") or str(rec.get("finished_at", ""))[:10], "run_id": run_id,
            "model_digest": rec.get("model_digest"), "finished_at": rec.get("finished_at")}
    night = rec.get("night")
    if night is None:  # committed before per-night summaries: counts and scores only
        stats = rec.get("score_stats") or {}
        counts = rec.get("counts") or {}
        rows = int(counts.get("rows", 0))
        return [{**base, "category": "*", "images": rows - int(counts.get("errors", 0)),
                 "errors": int(counts.get("errors", 0)), "score_q50": stats.get("q50"), "score_q90": stats.get("q90"),
                 "drift": "no drift summary (run committed before mdps trend)"}]
    if not night:  # a night with nothing new (--incremental commits it empty): a row that says so
        return [{**base, "category": "*", "images": 0, "errors": int((rec.get("counts") or {}).get("errors", 0)),
                 "drift": "no images scored this night"}]
    out = []
    for cat, one in sorted(night.items()):
        drift, stats = one.get("drift") or {}, one.get("score_stats") or {}
        images, flagged = int(one["images"]), one.get("flagged")
        shifts = {f"{s}_shift": (drift.get("stats", {}).get(s) or {}).get("shift") for s in ACQUISITION_STATS}
        verdict = drift.get("drifted")
        if verdict is None:
            why = "no reference (calibration without acquisition statistics: rerun mdps calibrate)" \
                if not one.get("reference") else f"too few images ({images})"
        else:
            why = "; ".join(drift.get("reasons") or []) or "none"
        out.append({**base, "category": cat, "images": images, "errors": int(one.get("errors", 0)),
                    "flagged": flagged, "flag_rate": None if flagged is None or not images else flagged / images,
                    "score_q50": stats.get("q50"), "score_q90": stats.get("q90"),
                    "median_p_value": drift.get("median_p_value"), "p_value_ks": drift.get("p_value_ks"),
                    **shifts, "drifted": verdict, "drift": why})
    return out


def trend_table(out: str, storage_options: dict[str, Any] | None = None, since: str | None = None) -> pa.Table:
    """The trend of every committed run under ``out`` (nights from ``since``, YYYY-MM-DD, on), oldest first."""
    if not exists(out, storage_options):
        raise FileNotFoundError(f"expected an output prefix (the --out of `mdps score`) at {out}, found nothing there")
    runs = committed_runs(out, storage_options)
    with ThreadPoolExecutor(min(READ_THREADS, max(1, len(runs)))) as pool:
        records = list(pool.map(lambda r: read_json(RunPaths(out, r).run_json, storage_options), runs))
    rows = [row for run_id, rec in zip(runs, records, strict=True) for row in _rows_of(run_id, rec)]
    rows = [r for r in rows if since is None or r["night"] >= since]
    rows.sort(key=lambda r: (r["night"], r["finished_at"] or "", r["category"]))
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in TREND_SCHEMA} for r in rows], schema=TREND_SCHEMA)


def drifted_nights(table: pa.Table) -> list[dict[str, Any]]:
    """The rows of ``table`` whose night drifted."""
    return [r for r in table.to_pylist() if r["drifted"]]


TABLE_COLUMNS = ("night", "category", "model", "images", "flagged", "flag_rate", "score_q50", "median_p_value",
                 "brightness_shift", "contrast_shift", "sharpness_shift", "drifted")


def write_trend(table: pa.Table, out_dir: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """``trend.parquet``, ``trend.csv`` and ``trend.png`` (per night: images, flag rate, median score and the
    three acquisition shifts, drifted nights circled) under ``out_dir``; returns their URIs."""
    rows = table.to_pylist()
    nights = sorted({r["night"] for r in rows})
    measures = {"images": "images", "flag rate": "flag_rate", "median score": "score_q50",
                **{f"{s} shift": f"{s}_shift" for s in ACQUISITION_STATS}}
    lines = {label: {cat: [(r["night"], r[col]) for r in rows if r["category"] == cat]
                     for cat in sorted({r["category"] for r in rows})} for label, col in measures.items()}
    png = night_panels(nights, lines, [(r["night"], r["category"]) for r in rows if r["drifted"]], "mdps trend")
    csv = io.BytesIO()
    pacsv.write_csv(table, csv)
    uris = [join(out_dir, name) for name in ("trend.parquet", "trend.csv", "trend.png")]
    for uri, data in zip(uris, (table_bytes(table), csv.getvalue(), png), strict=True):
        write_bytes(uri, data, storage_options)
    return uris
