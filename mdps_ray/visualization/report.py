"""``mdps report``: one self-contained HTML file for a committed run (images embedded as data URIs).

A review tool for an inspector: the calibrated image threshold and every image's decision; per
category the metrics (labelled runs), ROC and PRO curves, the score histogram with the threshold,
and three galleries — the most anomalous images, the highest-scoring normals (false positives
first) and the lowest-scoring anomalies (misses first); an unlabelled run shows the flagged
images instead, and no label columns. Panels are on the input's pixel grid
(:mod:`~mdps_ray.visualization.gallery`), charts have ticked axes and a colour key
(:mod:`~mdps_ray.visualization.svg`). Every string taken from data is HTML-escaped.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from mdps_ray.data.images import decode_mask
from mdps_ray.metrics import functional as F
from mdps_ray.storage.maps import read_map
from mdps_ray.storage.runs import RunPaths, committed_run, read_results
from mdps_ray.storage.uris import read_bytes, read_json, write_bytes
from mdps_ray.visualization import svg
from mdps_ray.visualization.gallery import RAMP, View, decisions_table, gallery

CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}
.g{display:flex;gap:6px;align-items:center;margin:6px 0}.g img{height:160px;width:auto;image-rendering:pixelated}
svg{background:#fff;border:1px solid #ccc;margin:4px}.charts{display:flex;flex-wrap:wrap}"""
DECISION_ROWS = 500


def _views(rows: list[dict[str, Any]], top: int, threshold: float | None) -> list[View]:
    by_score = sorted(rows, key=lambda r: -r["score"])
    if any(r["label"] is not None for r in rows):
        normals = [r for r in by_score if r["label"] == 0]
        anomalies = [r for r in reversed(by_score) if r["label"] == 1]
        return [View("Most anomalous images", "highest score first", by_score[:top]),
                View("Highest-scoring normal images", "false positives first: normal images the method "
                     "scored highest", normals[:top]),
                View("Lowest-scoring anomalous images", "misses first: defective images the method scored "
                     "lowest", anomalies[:top])]
    if threshold is None:
        return [View("Highest-scoring images", "unlabelled run without a calibrated threshold", by_score[:top])]
    flagged = [r for r in by_score if r["is_anomalous"]]
    return [View(f"Flagged images ({len(flagged)} of {len(rows)})", f"score above the threshold {threshold:.4g}, "
                 f"highest first (the first {top})", flagged[:top])]


def _metrics_table(metrics: dict[str, Any]) -> str:
    out = ['<table class="metrics"><tr><th class="l">metric</th><th>value</th></tr>']
    for k, v in metrics.items():
        if isinstance(v, float):
            shown = f"{int(v)}" if k.startswith("n_") else f"{v:.4f}"
            out.append(f'<tr><td class="l">{html.escape(k)}</td><td>{shown}</td></tr>')
    return "".join([*out, "</table>"])


def _charts(rows: list[dict[str, Any]], metrics: dict[str, Any], threshold: float | None, size: int,
            so: dict[str, Any] | None) -> str:
    labelled = [r for r in rows if r["label"] is not None]
    charts = []
    if len({r["label"] for r in labelled}) == 2:
        fpr, tpr, _ = roc_curve([r["label"] for r in labelled], [r["score"] for r in labelled])
        charts.append(svg.curve(fpr, tpr, f"ROC (image AUROC {metrics.get('image_auroc', float('nan')):.3f})",
                                "false-positive rate", "true-positive rate"))
        pro = _pro_curve(labelled, size, so)
        if pro is not None:
            charts.append(svg.curve(pro[0], pro[1], f"PRO to FPR 0.3 (AUPRO {metrics.get('aupro', float('nan')):.3f})",
                                    "pixel false-positive rate", "per-region overlap", xmax=0.3))
    if labelled:
        groups = [("normal", [r["score"] for r in labelled if r["label"] == 0], svg.NORMAL),
                  ("anomalous", [r["score"] for r in labelled if r["label"] == 1], svg.ANOMALOUS)]
    else:
        groups = [("unlabelled", [r["score"] for r in rows], svg.UNLABELLED)]
    charts.append(svg.histogram(groups, threshold, "image scores"))
    return f'<div class="charts">{"".join(charts)}</div>'


def _category_section(cat: str, rows: list[dict[str, Any]], metrics: dict[str, Any], threshold: float | None,
                      paths: RunPaths, size: int, top: int, so: dict[str, Any] | None) -> str:
    labelled = any(r["label"] is not None for r in rows)
    out = [f"<h2>{html.escape(cat)}</h2>"]
    out.append(_metrics_table(metrics) if labelled else
               f"<p>unlabelled: {len(rows)} images without ground truth, so no detection metrics; "
               "the histogram and the flagged list show what the threshold does</p>")
    out.append(_charts(rows, metrics, threshold, size, so))
    hi = max([1e-12, *((r["map_max"] or 0.0) for r in rows)])
    out.append(svg.colour_key(hi, RAMP))
    out += [gallery(v, paths, size, hi, so) for v in _views(rows, top, threshold)]
    out.append(decisions_table(rows, DECISION_ROWS))
    return "\n".join(out)


def _pro_curve(
    rows: list[dict[str, Any]], size: int, so: dict[str, Any] | None
) -> tuple[np.ndarray, np.ndarray] | None:
    maps, masks = [], []
    for r in rows:
        if not r["map_uri"]:
            return None
        amap = read_map(r["map_uri"], so)
        maps.append(amap)
        mask = decode_mask(read_bytes(r["mask_uri"], so), amap.shape[-1])[0].numpy() if r["mask_uri"] else None
        masks.append(mask if mask is not None else np.zeros(amap.shape, dtype=bool))
    gt = np.stack(masks)
    if not gt.any():
        return None
    fpr, pro = F.pro_curve(gt, np.stack(maps))
    keep = fpr <= 0.3
    return fpr[keep], pro[keep]


def _threshold_line(calibration: dict[str, Any] | None, rows: list[dict[str, Any]]) -> str:
    if not calibration or calibration.get("score_threshold") is None:
        return "<p>no calibrated image threshold: images are ranked, not decided</p>"
    flagged = sum(1 for r in rows if r["is_anomalous"])
    n = int(calibration.get("n_images", 0))
    certified, bound = calibration.get("certified_fpr"), calibration.get("fpr_bound_90")
    if certified is None:  # an older calibration: the rate it was asked for, not one it certifies
        rate = f"asked for {100 * float(calibration.get('target_fpr', 0.0)):.3g} % false positives, not certified"
    else:
        rate = (f"certifies {100 * float(certified):.3g} % false positives on average, at most "
                f"{100 * float(bound or certified):.3g} % with 90 % confidence")
    return (f'<p class="threshold">image threshold {calibration["score_threshold"]:.6g} ({rate}, from {n} held-out '
            f'normal images): {flagged} of {len(rows)} flagged</p>')


def _overview(cats: list[str], rows: list[dict[str, Any]], metrics: dict[str, Any]) -> str:
    out = ['<table class="overview"><tr><th class="l">category</th><th>images</th><th>flagged</th>'
           "<th>image AUROC</th><th>pixel AUROC</th><th>AUPRO</th></tr>"]
    for c in cats:
        m = metrics["per_category"].get(c, {})
        mine = [r for r in rows if r["category"] == c]
        cells = "".join(f"<td>{m[k]:.4f}</td>" if k in m else "<td>–</td>"
                        for k in ("image_auroc", "pixel_auroc", "aupro"))
        out.append(f'<tr><td class="l">{html.escape(c)}</td><td>{len(mine)}</td>'
                   f'<td>{sum(1 for r in mine if r["is_anomalous"])}</td>{cells}</tr>')
    return "".join([*out, "</table>"])


def build_report(
    run_dir: str, storage_options: dict[str, Any] | None = None, top: int = 8, out_uri: str | None = None
) -> str:
    """Write ``report.html`` into the run (or ``out_uri``); returns its URI."""
    so = storage_options
    paths = committed_run(run_dir, so)
    record, metrics = read_json(paths.run_json, so), read_json(paths.metrics, so)
    size = int(record["method"]["prior"]["image_size"])
    calibration = record.get("calibration") or {}
    threshold = calibration.get("score_threshold")
    rows = read_results(paths, so).to_pylist()
    n_err = read_results(paths, so, errors=True).num_rows
    cats = sorted({r["category"] for r in rows})
    body = [f"<h1>mdps-ray run {html.escape(paths.run_id)}</h1>",
            f"<p>{len(rows)} images scored, {n_err} errors · model {html.escape(record['model_digest'])} · "
            f"config {html.escape(record['config_hash'])}</p>", _threshold_line(calibration, rows),
            _overview(cats, rows, metrics)]
    for c in cats:
        body.append(_category_section(c, [r for r in rows if r["category"] == c], metrics["per_category"].get(c, {}),
                                      threshold, paths, size, top, so))
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>mdps-ray {html.escape(paths.run_id)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>"
    )
    target = out_uri or f"{paths.root}/report.html"
    write_bytes(target, page.encode(), so)
    return target
