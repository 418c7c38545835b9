"""Small PNG line plots drawn with Pillow (no plotting dependency)."""

from __future__ import annotations

import io
import itertools
from collections.abc import Mapping, Sequence

from PIL import Image, ImageDraw


def line_plot(
    values: Sequence[float], title: str, xlabel: str, ylabel: str, size: tuple[int, int] = (640, 360)
) -> bytes:
    """A PNG of ``values`` against their index, with min/max labels on the axes."""
    w, h = size
    left, right, top, bottom = 60, 20, 30, 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    d.text((left, 8), title, fill="black")
    d.rectangle([left, top, w - right, h - bottom], outline="black")
    vals = [float(v) for v in values if v == v]  # drop NaN
    if len(vals) >= 2:
        lo, hi = min(vals), max(vals)
        span = (hi - lo) or 1.0
        pts = [
            (left + (w - left - right) * i / (len(vals) - 1), h - bottom - (h - top - bottom) * (v - lo) / span)
            for i, v in enumerate(vals)
        ]
        d.line(pts, fill=(31, 119, 180), width=2)
        d.text((4, top), f"{hi:.3g}", fill="black")
        d.text((4, h - bottom - 10), f"{lo:.3g}", fill="black")
        d.text((w - right - 40, h - bottom + 5), str(len(vals)), fill="black")
    d.text((left, h - bottom + 5), xlabel, fill="black")
    d.text((4, h // 2), ylabel, fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def night_panels(nights: Sequence[str], series: Mapping[str, Sequence[float | None]], marked: Sequence[bool],
                 title: str, width: int = 720, panel_height: int = 150) -> bytes:
    """A PNG with one panel per series (values per night, in order; None is a gap), the nights in ``marked``
    circled in red on every panel and named under the last one."""
    left, right, top, bottom = 70, 20, 22, 18
    n = len(nights)
    img = Image.new("RGB", (width, 24 + panel_height * len(series) + 24), "white")
    d = ImageDraw.Draw(img)
    d.text((left, 6), title, fill="black")

    def x_of(i: int) -> float:
        return left + (width - left - right) * (i / (n - 1) if n > 1 else 0.5)

    for k, (name, values) in enumerate(series.items()):
        y0 = 24 + k * panel_height
        box = (left, y0 + top, width - right, y0 + panel_height - bottom)
        d.rectangle(box, outline="black")
        d.text((left, y0 + 6), name, fill="black")
        known = [float(v) for v in values if v is not None and v == v]
        if not known:
            continue
        lo, hi = min(known), max(known)
        span = (hi - lo) or 1.0
        d.text((4, box[1]), f"{hi:.3g}", fill="black")
        d.text((4, box[3] - 10), f"{lo:.3g}", fill="black")
        pts = [(x_of(i), box[3] - (box[3] - box[1]) * (float(v) - lo) / span) if v is not None and v == v else None
               for i, v in enumerate(values)]
        for a, b in itertools.pairwise(pts):
            if a is not None and b is not None:
                d.line([a, b], fill=(31, 119, 180), width=2)
        for p, bad in zip(pts, marked, strict=True):
            if p is not None:
                r = 5 if bad else 3
                d.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], outline="red" if bad else (31, 119, 180),
                          width=2 if bad else 1)
    drifted = [night for night, bad in zip(nights, marked, strict=True) if bad]
    note = f"{n} nights {nights[0]} .. {nights[-1]}" if n else "no nights"
    d.text((left, img.height - 18), note + (f"; drift: {', '.join(drifted)}" if drifted else ""), fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
