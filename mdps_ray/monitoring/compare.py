"""``mdps compare RUN_A RUN_B``: two committed runs over the same images (the current model and a candidate).

Reads the two runs' result rows (a few columns each, nothing of any other run) and joins them on the
image id. A *flip* is an image flagged by one run and not by the other: ``flagged_by_b`` (B flags what
A passed) or ``cleared_by_b`` (B passes what A flagged). Written to a folder:

    flips.parquet     one row per flipped image: ids, both scores, p-values, decisions and maps
    compare.json      counts per direction and category, images only in one run, Spearman's ρ of the scores
    compare.html      the flipped images side by side (input, A's map, B's map)
"""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.stats import spearmanr

from mdps_ray.storage.maps import read_map
from mdps_ray.storage.results import table_bytes
from mdps_ray.storage.runs import RunPaths, committed_run, read_results
from mdps_ray.storage.uris import join, read_bytes, write_bytes
from mdps_ray.visualization.gallery import heat, thumbnail

COLUMNS = ["image_id", "category", "uri", "score", "is_anomalous", "p_value", "map_uri", "model_digest", "label"]
DIRECTIONS = ("flagged_by_b", "cleared_by_b")
GALLERY_LIMIT = 60


def _rows(paths: RunPaths, so: dict[str, Any] | None) -> pa.Table:
    table = read_results(paths, so, columns=COLUMNS)
    if table.num_rows and pc.all(pc.is_null(table.column("is_anomalous"))).as_py():
        raise ValueError(f"expected run {paths.run_id} to carry decisions (a calibrated model), got none; "
                         "calibrate the model (`mdps calibrate`) and score again")
    return table


def joined(a: pa.Table, b: pa.Table) -> pa.Table:
    """Rows of the images both runs scored, A's columns suffixed ``_a`` and B's ``_b`` (category, uri, label
    from A), sorted by image id."""
    left = a.rename_columns([c if c == "image_id" else f"{c}_a" for c in a.column_names])
    right = b.rename_columns([c if c == "image_id" else f"{c}_b" for c in b.column_names])
    both = left.join(right, "image_id", join_type="inner").sort_by("image_id")
    return both.rename_columns([c.removesuffix("_a") if c in ("category_a", "uri_a", "label_a") else c
                                for c in both.column_names])


def flips(both: pa.Table) -> pa.Table:
    """The images whose decision differs between A and B, with a ``direction`` column."""
    fa, fb = both.column("is_anomalous_a"), both.column("is_anomalous_b")
    differ = pc.fill_null(pc.not_equal(fa, fb), False)
    out = both.filter(differ)
    direction = pc.if_else(out.column("is_anomalous_b"), DIRECTIONS[0], DIRECTIONS[1])
    keep = ["image_id", "category", "uri", "label", "score_a", "score_b", "p_value_a", "p_value_b",
            "is_anomalous_a", "is_anomalous_b", "map_uri_a", "map_uri_b", "model_digest_a", "model_digest_b"]
    return out.select(keep).append_column("direction", direction)


def summary(a: pa.Table, b: pa.Table, both: pa.Table, flipped: pa.Table, run_a: str, run_b: str) -> dict[str, Any]:
    """Counts per direction and category, images only in one run, and the scores' rank correlation."""
    ids_a, ids_b = set(a.column("image_id").to_pylist()), set(b.column("image_id").to_pylist())
    rho = None
    if both.num_rows >= 3:
        value = spearmanr(both.column("score_a").to_numpy(), both.column("score_b").to_numpy()).statistic
        rho = None if np.isnan(value) else float(value)
    per_cat: dict[str, dict[str, int]] = {}
    for cat in sorted(pc.unique(both.column("category")).to_pylist()):
        mine = flipped.filter(pc.equal(flipped.column("category"), cat))
        per_cat[cat] = {"images": int(pc.sum(pc.equal(both.column("category"), cat)).as_py() or 0),
                        **{d: int(pc.sum(pc.equal(mine.column("direction"), d)).as_py() or 0) for d in DIRECTIONS}}
    directions = {d: int(pc.sum(pc.equal(flipped.column("direction"), d)).as_py() or 0) for d in DIRECTIONS}
    digests = {k: sorted(set(t.column("model_digest").to_pylist()) - {None}) for k, t in (("a", a), ("b", b))}
    return {"run_a": run_a, "run_b": run_b, "model_digest_a": digests["a"], "model_digest_b": digests["b"],
            "images_compared": both.num_rows, "only_in_a": len(ids_a - ids_b), "only_in_b": len(ids_b - ids_a),
            "flipped": flipped.num_rows, **directions, "spearman_rho": rho, "per_category": per_cat}


def _panel(uri: str | None, so: dict[str, Any] | None, hi: float) -> str:
    if uri is None:
        return "<td>–</td>"
    return f'<td><img src="{thumbnail(heat(read_map(uri, so), hi))}" alt="map"></td>'


def gallery_html(flipped: pa.Table, facts: dict[str, Any], so: dict[str, Any] | None) -> str:
    """The flipped images (the first :data:`GALLERY_LIMIT` of each direction): input, A's map, B's map."""
    esc = html.escape
    body = [f"<h1>mdps compare</h1><p>A: {esc(facts['run_a'])}<br>B: {esc(facts['run_b'])}</p>",
            f"<p>{facts['images_compared']} images in both runs; {facts['flagged_by_b']} flagged by B only, "
            f"{facts['cleared_by_b']} cleared by B; Spearman ρ of the scores "
            f"{'–' if facts['spearman_rho'] is None else format(facts['spearman_rho'], '.3f')}</p>"]
    for direction in DIRECTIONS:
        rows = [r for r in flipped.to_pylist() if r["direction"] == direction][:GALLERY_LIMIT]
        body.append(f"<h2>{esc(direction.replace('_', ' '))} ({len(rows)})</h2>")
        if not rows:
            body.append("<p>none</p>")
            continue
        hi = max(1e-12, *(float(np.max(read_map(u, so))) for r in rows for u in (r["map_uri_a"], r["map_uri_b"]) if u))
        body.append('<table><tr><th>image</th><th>score A</th><th>score B</th><th>input</th><th>map A</th>'
                    "<th>map B</th></tr>")
        for r in rows:
            image = thumbnail(read_bytes(r["uri"], so))
            body.append(f"<tr><td>{esc(r['image_id'])}<br><small>{esc(r['category'])}</small></td>"
                        f"<td>{r['score_a']:.4f}</td><td>{r['score_b']:.4f}</td>"
                        f'<td><img src="{image}" alt="input"></td>{_panel(r["map_uri_a"], so, hi)}'
                        f"{_panel(r['map_uri_b'], so, hi)}</tr>")
        body.append("</table>")
    style = "body{font-family:system-ui,sans-serif;margin:24px}td,th{border:1px solid #ccc;padding:4px}" \
            "table{border-collapse:collapse}img{height:128px}"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>mdps compare</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>")


def compare_runs(run_a: str, run_b: str, out_dir: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compare two committed runs (module docstring); write the three files under ``out_dir``; returns
    ``compare.json``'s content."""
    so = storage_options
    a, b = _rows(committed_run(run_a, so), so), _rows(committed_run(run_b, so), so)
    both = joined(a, b)
    if both.num_rows == 0:
        raise ValueError(f"expected two runs over the same images, got no image id in common ({a.num_rows} rows "
                         f"in {run_a}, {b.num_rows} in {run_b}); score the same data with both models")
    flipped = flips(both)
    facts = summary(a, b, both, flipped, run_a, run_b)
    write_bytes(join(out_dir, "flips.parquet"), table_bytes(flipped), so)
    write_bytes(join(out_dir, "compare.json"), json.dumps(facts, indent=2).encode(), so)
    write_bytes(join(out_dir, "compare.html"), gallery_html(flipped, facts, so).encode(), so)
    return facts

