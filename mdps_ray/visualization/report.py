"""``mdps report``: one self-contained HTML file for a committed run (images embedded as data URIs).

Per-category metrics; ROC (image level) and PRO (pixel level, up to FPR 0.3) curves and score
histograms as inline SVG; a gallery of the most anomalous images: input | posterior
reconstruction | anomaly-map overlay | ground truth, with scores. Every string taken from data
(file names, categories, defect types) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
from PIL import Image
from sklearn.metrics import roc_curve

from mdps_ray.data.images import decode_image, decode_mask
from mdps_ray.metrics import functional as F
from mdps_ray.storage.results import load_map
from mdps_ray.storage.runs import RunPaths, read_results
from mdps_ray.storage.uris import exists, read_bytes, read_json, write_bytes

CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}
.g{display:flex;gap:6px;align-items:center;margin:6px 0}.g img{width:128px;height:128px;image-rendering:pixelated}
svg{background:#fff;border:1px solid #ccc;margin:4px}"""


def _png(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _rgb(x: Any) -> np.ndarray:
    return ((x.numpy().transpose(1, 2, 0) + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


def _heat(amap: np.ndarray, hi: float) -> np.ndarray:
    v = np.clip(amap / max(hi, 1e-12), 0, 1)
    return np.stack([np.clip(2 * v, 0, 1), np.clip(2 * v - 1, 0, 1), np.zeros_like(v)], -1)


def _overlay(image: np.ndarray, amap: np.ndarray, hi: float) -> np.ndarray:
    h, w = image.shape[:2]
    heat_img = Image.fromarray((_heat(amap, hi) * 255).astype(np.uint8))
    heat = np.asarray(heat_img.resize((w, h), Image.Resampling.BILINEAR))
    return (0.55 * image + 0.45 * heat).astype(np.uint8)


def _svg_curve(xs: np.ndarray, ys: np.ndarray, title: str, xlabel: str, ylabel: str, xmax: float = 1.0) -> str:
    w, h, m = 260, 220, 30
    pts = " ".join(
        f"{m + (w - 2 * m) * min(x, xmax) / xmax:.1f},{h - m - (h - 2 * m) * y:.1f}"
        for x, y in zip(xs, ys, strict=True)
    )
    return (
        f'<svg width="{w}" height="{h}" role="img" aria-label="{html.escape(title)}"><text x="{m}" y="16" '
        f'font-size="12">{html.escape(title)}</text><rect x="{m}" y="{m}" width="{w - 2 * m}" height="{h - 2 * m}" '
        f'fill="none" stroke="#888"/><polyline points="{pts}" fill="none" stroke="#1f77b4" stroke-width="2"/>'
        f'<text x="{w // 2 - 20}" y="{h - 8}" font-size="11">{xlabel}</text><text x="2" y="{h // 2}" '
        f'font-size="11">{ylabel}</text></svg>'
    )


def _svg_hist(normal: list[float], anomalous: list[float], threshold: float | None, title: str) -> str:
    w, h, m = 260, 220, 30
    values = normal + anomalous
    lo, hi = min(values), max(values)
    edges = np.linspace(lo, hi if hi > lo else lo + 1, 21)
    parts = [
        f'<svg width="{w}" height="{h}" role="img" aria-label="{html.escape(title)}"><text x="{m}" y="16" '
        f'font-size="12">{html.escape(title)}</text>'
    ]
    counts = [np.histogram(v, edges)[0] if v else np.zeros(20) for v in (normal, anomalous)]
    top = max(1, max(int(c.max()) for c in counts))
    bw = (w - 2 * m) / 20
    for c, color, off in ((counts[0], "#2ca02c", 0.0), (counts[1], "#d62728", bw / 2)):
        for i, n in enumerate(c):
            bh = (h - 2 * m) * n / top
            parts.append(
                f'<rect x="{m + i * bw + off:.1f}" y="{h - m - bh:.1f}" width="{bw / 2:.1f}" '
                f'height="{bh:.1f}" fill="{color}"/>'
            )
    if threshold is not None and hi > lo:
        x = m + (w - 2 * m) * (threshold - lo) / (edges[-1] - lo)
        parts.append(f'<line x1="{x:.1f}" y1="{m}" x2="{x:.1f}" y2="{h - m}" stroke="#000" stroke-dasharray="4"/>')
    parts.append('<text x="30" y="210" font-size="11">normal | anomalous | -- threshold</text></svg>')
    return "".join(parts)


def _category_section(
    cat: str,
    rows: list[dict[str, Any]],
    metrics: dict[str, Any],
    threshold: float | None,
    paths: RunPaths,
    size: int,
    top: int,
    so: dict[str, Any] | None,
) -> str:
    esc = html.escape
    out = [f"<h2>{esc(cat)}</h2>", '<table class="metrics"><tr><th class="l">metric</th><th>value</th></tr>']
    for k, v in metrics.items():
        if isinstance(v, float):
            shown = f"{int(v)}" if k.startswith("n_") else f"{v:.4f}"
            out.append(f'<tr><td class="l">{esc(k)}</td><td>{shown}</td></tr>')
    out.append("</table>")
    labelled = [r for r in rows if r["label"] is not None]
    if len({r["label"] for r in labelled}) == 2:
        fpr, tpr, _ = roc_curve([r["label"] for r in labelled], [r["score"] for r in labelled])
        out.append(
            _svg_curve(fpr, tpr, f"ROC (image AUROC {metrics.get('image_auroc', float('nan')):.3f})", "FPR", "TPR")
        )
        pro = _pro_curve(labelled, size, so)
        if pro is not None:
            out.append(
                _svg_curve(
                    pro[0],
                    pro[1],
                    f"PRO to FPR 0.3 (AUPRO {metrics.get('aupro', float('nan')):.3f})",
                    "FPR",
                    "PRO",
                    xmax=0.3,
                )
            )
        out.append(
            _svg_hist(
                [r["score"] for r in labelled if r["label"] == 0],
                [r["score"] for r in labelled if r["label"] == 1],
                threshold,
                "image scores",
            )
        )
    out.append(_gallery(sorted(rows, key=lambda r: -r["score"])[:top], paths, size, so))
    return "\n".join(out)


def _pro_curve(
    rows: list[dict[str, Any]], size: int, so: dict[str, Any] | None
) -> tuple[np.ndarray, np.ndarray] | None:
    maps, masks = [], []
    for r in rows:
        if not r["map_uri"]:
            return None
        amap = load_map(r["map_uri"], so)
        maps.append(amap)
        mask = decode_mask(read_bytes(r["mask_uri"], so), amap.shape[-1])[0].numpy() if r["mask_uri"] else None
        masks.append(mask if mask is not None else np.zeros(amap.shape, dtype=bool))
    gt = np.stack(masks)
    if not gt.any():
        return None
    fpr, pro = F.pro_curve(gt, np.stack(maps))
    keep = fpr <= 0.3
    return fpr[keep], pro[keep]


def _gallery(rows: list[dict[str, Any]], paths: RunPaths, size: int, so: dict[str, Any] | None) -> str:
    esc = html.escape
    hi = max((r["map_max"] or 0.0) for r in rows) if rows else 1.0
    out = [
        '<h3>Most anomalous images</h3><table class="gallery"><tr><th class="l">image</th><th>score</th>'
        "<th>input | reconstruction | anomaly map | ground truth</th></tr>"
    ]
    for r in rows:
        image = _rgb(decode_image(read_bytes(r["uri"], so), size))
        recon_uri = paths.recon_uri(r["image_id"])
        recon = _rgb(decode_image(read_bytes(recon_uri, so), size)) if exists(recon_uri, so) else image * 0
        amap = load_map(r["map_uri"], so) if r["map_uri"] else np.zeros((size, size), dtype=np.float32)
        gt = (
            decode_mask(read_bytes(r["mask_uri"], so), size)[0].numpy()
            if r["mask_uri"]
            else np.zeros((size, size), dtype=bool)
        )
        cells = [_png(image), _png(recon), _png(_overlay(image, amap, hi)), _png((gt * 255).astype(np.uint8))]
        imgs = "".join(
            f'<img src="{c}" alt="{esc(kind)}">'
            for c, kind in zip(cells, ("input", "reconstruction", "anomaly map", "ground truth"), strict=True)
        )
        label = "unlabelled" if r["label"] is None else ("anomalous" if r["label"] else "normal")
        out.append(
            f'<tr><td class="l">{esc(r["image_id"])}<br><small>{esc(label)} · '
            f"{esc(r['defect_type'] or '')}</small></td><td>{r['score']:.4f}</td>"
            f'<td><div class="g">{imgs}</div></td></tr>'
        )
    out.append("</table>")
    return "".join(out)


def build_report(
    run_dir: str, storage_options: dict[str, Any] | None = None, top: int = 8, out_uri: str | None = None
) -> str:
    """Write ``report.html`` into the run (or ``out_uri``); returns its URI."""
    so = storage_options
    out, _, run_id = run_dir.rstrip("/").rpartition("/")
    paths = RunPaths(out, run_id)
    if not exists(paths.success, so):
        raise FileNotFoundError(f"expected a committed run (with _SUCCESS) at {run_dir}, found none")
    record, metrics = read_json(paths.run_json, so), read_json(paths.metrics, so)
    size = int(record["method"]["prior"]["image_size"])
    threshold = (record.get("calibration") or {}).get("score_threshold")
    rows = read_results(paths, so).to_pylist()
    n_err = read_results(paths, so, errors=True).num_rows
    cats = sorted({r["category"] for r in rows})
    body = [
        f"<h1>mdps-ray run {html.escape(run_id)}</h1>",
        f"<p>{len(rows)} images scored, {n_err} errors · model {html.escape(record['model_digest'])} · "
        f"config {html.escape(record['config_hash'])}</p>",
        '<table class="overview"><tr><th class="l">category</th><th>images</th><th>image AUROC</th>'
        "<th>pixel AUROC</th><th>AUPRO</th></tr>",
    ]
    for c in cats:
        m = metrics["per_category"].get(c, {})
        body.append(
            f'<tr><td class="l">{html.escape(c)}</td><td>{int(m.get("n_images", 0))}</td>'
            + "".join(
                f"<td>{m[k]:.4f}</td>" if k in m else "<td>–</td>" for k in ("image_auroc", "pixel_auroc", "aupro")
            )
            + "</tr>"
        )
    body.append("</table>")
    for c in cats:
        body.append(
            _category_section(
                c,
                [r for r in rows if r["category"] == c],
                metrics["per_category"].get(c, {}),
                threshold,
                paths,
                size,
                top,
                so,
            )
        )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>mdps-ray {html.escape(run_id)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>"
    )
    target = out_uri or f"{paths.root}/report.html"
    write_bytes(target, page.encode(), so)
    return target
