"""Small PNG line plots drawn with Pillow (no plotting dependency)."""

from __future__ import annotations

import io
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



COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189), (140, 86, 75), (227, 119, 194)]


def night_panels(nights: Sequence[str], lines: Mapping[str, Mapping[str, Sequence[tuple[str, float | None]]]],
                 marked: Sequence[tuple[str, str]], title: str, width: int = 760, panel_height: int = 150) -> bytes:
    """A PNG with one panel per measure: one line per category over the ``nights`` (x axis, in order).

    ``lines[measure][category]`` is that category's (night, value) points (None: a gap); the (night, category)
    pairs in ``marked`` (drifted) are circled in red on every panel and named at the bottom.
    """
    left, right, top, bottom = 70, 20, 22, 30
    n = len(nights)
    img = Image.new("RGB", (width, 24 + panel_height * len(lines) + 24), "white")
    d = ImageDraw.Draw(img)
    cats = sorted({c for per in lines.values() for c in per})
    d.text((left, 6), title + "   " + "  ".join(f"[{k + 1}] {c}" for k, c in enumerate(cats)), fill="black")
    at = {night: i for i, night in enumerate(nights)}

    def x_of(night: str) -> float:
        return left + (width - left - right) * (at[night] / (n - 1) if n > 1 else 0.5)

    bad = set(marked)
    for k, (name, per_cat) in enumerate(lines.items()):
        y0 = 24 + k * panel_height
        box = (left, y0 + top, width - right, y0 + panel_height - bottom)
        d.rectangle(box, outline="black")
        d.text((left, y0 + 6), name, fill="black")
        if n <= 16:
            for night in nights:
                d.text((x_of(night) - 14, box[3] + 3), night[5:], fill="black")
        known = [float(v) for pts in per_cat.values() for _, v in pts if v is not None and v == v]
        if not known:
            continue
        lo, hi = min(known), max(known)
        span = (hi - lo) or 1.0
        d.text((4, box[1]), f"{hi:.3g}", fill="black")
        d.text((4, box[3] - 10), f"{lo:.3g}", fill="black")
        for c, cat in enumerate(cats):
            colour = COLOURS[c % len(COLOURS)]
            pts = [(night, (x_of(night), box[3] - (box[3] - box[1]) * (float(v) - lo) / span))
                   for night, v in per_cat.get(cat, ()) if v is not None and v == v]
            if len(pts) > 1:
                d.line([xy for _, xy in pts], fill=colour, width=2)
            for night, (x, y) in pts:
                r = 5 if (night, cat) in bad else 3
                d.ellipse([x - r, y - r, x + r, y + r], outline="red" if (night, cat) in bad else colour, width=2)
    named = ", ".join(f"{night} {cat}" for night, cat in marked)
    note = f"{n} nights {nights[0]} .. {nights[-1]}" if n else "no nights"
    d.text((left, img.height - 18), note + (f"; drift (red): {named}" if named else ""), fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
