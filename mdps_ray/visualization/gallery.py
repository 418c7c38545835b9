"""The report's image panels: input | reconstruction | anomaly map over the input | ground truth.

Panels are on the input's own pixel grid: the stored map (the prior's S × S grid) is upsampled to
the input's size (:func:`~mdps_ray.core.maps.to_input_grid`), the reconstruction too, and all of
them are then shown at most ``DISPLAY`` px on their long side (the HTML stays small for
megapixel inputs). Every string from data is escaped.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from mdps_ray.core.maps import to_input_grid
from mdps_ray.data.images import decode_native
from mdps_ray.storage.maps import read_map, read_recon
from mdps_ray.storage.runs import RunPaths
from mdps_ray.storage.uris import read_bytes

DISPLAY = 256
RAMP = np.array([[0, 0, 0], [128, 0, 0], [255, 0, 0], [255, 128, 0], [255, 255, 0]], dtype=np.uint8)


@dataclass(frozen=True)
class View:
    """One gallery: a title, what it shows, and its rows."""

    title: str
    hint: str
    rows: list[dict[str, Any]]


def _png(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _shown(img: Image.Image) -> Image.Image:
    w, h = img.size
    scale = min(1.0, DISPLAY / max(w, h))
    return img if scale == 1.0 else img.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                               Image.Resampling.BILINEAR)


def _rgb(x: torch.Tensor) -> Image.Image:
    return Image.fromarray(((x.numpy().transpose(1, 2, 0) + 1) * 127.5).round().clip(0, 255).astype(np.uint8))


def heat(amap: np.ndarray, hi: float) -> np.ndarray:
    """Map values in [0, hi] → RGB along :data:`RAMP` (black → red → yellow), (H, W, 3) uint8."""
    v = np.clip(amap / max(hi, 1e-12), 0, 1) * (len(RAMP) - 1)
    i = np.minimum(v.astype(int), len(RAMP) - 2)
    f = (v - i)[..., None]
    return ((1 - f) * RAMP[i] + f * RAMP[i + 1]).astype(np.uint8)


def thumbnail(image: bytes | np.ndarray) -> str:
    """An encoded image file or an (H, W[, 3]) uint8 array as a PNG data URI, at most :data:`DISPLAY` px."""
    if isinstance(image, bytes):
        shown = _shown(_rgb(decode_native(image)))
    else:
        shown = _shown(Image.fromarray(image)).resize((DISPLAY, DISPLAY), Image.Resampling.NEAREST)
    return _png(np.asarray(shown))


def _centre(img: Image.Image, frac_h: float, frac_w: float) -> Image.Image:
    """The centre ``frac`` of an image (the region a cropped map covers)."""
    w, h = img.size
    cw, ch = round(w * frac_w), round(h * frac_h)
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch))


def _stored_map(row: dict[str, Any], side: int, so: dict[str, Any] | None) -> torch.Tensor:
    if not row["map_uri"]:
        return torch.zeros(1, 1, side, side)
    return torch.from_numpy(read_map(row["map_uri"], so))[None, None]


def panels(row: dict[str, Any], paths: RunPaths, side: int, hi: float, so: dict[str, Any] | None) -> list[str]:
    """The panels of one image as PNG data URIs, on its input grid (ground truth only for labelled images)."""
    image = _rgb(decode_native(read_bytes(row["uri"], so)))
    w, h = image.size
    amap = _stored_map(row, side, so)
    frac_h, frac_w = amap.shape[-2] / side, amap.shape[-1] / side  # < 1 for a centre-cropped map
    shown = _shown(_centre(image, frac_h, frac_w))
    up = to_input_grid(amap, (h, w), side)[0, 0].numpy()
    overlay = 0.55 * np.asarray(shown) + 0.45 * np.asarray(Image.fromarray(heat(up, hi)).resize(shown.size))
    recon = (read_recon(row["map_uri"], paths.recon_uri(row["image_id"]), so)
             or Image.new("RGB", (side, side))).resize((w, h), Image.Resampling.BILINEAR)
    cells = [shown, _centre(recon, frac_h, frac_w).resize(shown.size), Image.fromarray(overlay.astype(np.uint8))]
    if row["label"] is not None and not row["mask_uri"]:
        cells.append(Image.new("L", shown.size))  # labelled, no defect region: an empty ground truth
    elif row["mask_uri"]:
        gt = Image.open(io.BytesIO(read_bytes(row["mask_uri"], so))).convert("L")
        gt = gt.resize((w, h), Image.Resampling.NEAREST)
        cells.append(_centre(gt, frac_h, frac_w).resize(shown.size, Image.Resampling.NEAREST))
    return [_png(np.asarray(c)) for c in cells]


def _decision(row: dict[str, Any]) -> str:
    flagged = row["is_anomalous"]
    if flagged is None:
        return "no threshold"
    verdict = "flagged" if flagged else "not flagged"
    if row["label"] is None:
        return verdict
    outcome = {(1, True): "true positive", (0, True): "false positive", (1, False): "miss",
               (0, False): "true negative"}[(int(row["label"]), bool(flagged))]
    return f"{verdict} · {outcome}"


def gallery(view: View, paths: RunPaths, side: int, hi: float, so: dict[str, Any] | None) -> str:
    """One view as a table: id, label/defect, score, decision, panels."""
    esc = html.escape
    labelled = any(r["label"] is not None for r in view.rows)
    kinds = ["input", "reconstruction", "anomaly map"] + (["ground truth"] if labelled else [])
    out = [f"<h3>{esc(view.title)}</h3><p><small>{esc(view.hint)}</small></p>"]
    if not view.rows:
        return "".join([*out, "<p>none</p>"])
    out.append(f'<table class="gallery"><tr><th class="l">image</th><th>score</th><th class="l">decision</th>'
               f"<th>{' | '.join(kinds)}</th></tr>")
    for r in view.rows:
        imgs = "".join(f'<img src="{c}" alt="{esc(k)}" title="{esc(k)}">'
                       for c, k in zip(panels(r, paths, side, hi, so), kinds, strict=False))
        about = "" if r["label"] is None else ("anomalous" if r["label"] else "normal")
        about += f" · {r['defect_type']}" if r["defect_type"] else ""
        out.append(f'<tr><td class="l">{esc(r["image_id"])}<br><small>{esc(about)}</small></td>'
                   f'<td>{r["score"]:.4f}</td><td class="l decision">{esc(_decision(r))}</td>'
                   f'<td><div class="g">{imgs}</div></td></tr>')
    out.append("</table>")
    return "".join(out)


def decisions_table(rows: list[dict[str, Any]], limit: int) -> str:
    """Every image's score and decision, highest score first (the first ``limit``)."""
    esc = html.escape
    ordered = sorted(rows, key=lambda r: -r["score"])
    labelled = any(r["label"] is not None for r in rows)
    head = '<th class="l">label</th>' if labelled else ""
    out = [f'<details><summary>all {len(rows)} images, by score</summary><table class="decisions"><tr>'
           f'<th class="l">image</th>{head}<th>score</th><th class="l">decision</th></tr>']
    for r in ordered[:limit]:
        label = f'<td class="l">{"" if r["label"] is None else int(r["label"])}</td>' if labelled else ""
        out.append(f'<tr><td class="l">{esc(r["image_id"])}</td>{label}<td>{r["score"]:.4f}</td>'
                   f'<td class="l">{esc(_decision(r))}</td></tr>')
    out.append("</table>")
    if len(ordered) > limit:
        out.append(f"<p><small>{len(ordered) - limit} more in the run's results/ Parquet</small></p>")
    out.append("</details>")
    return "".join(out)
