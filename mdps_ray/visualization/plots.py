"""Small PNG line plots drawn with Pillow (no plotting dependency)."""

from __future__ import annotations

import io
from collections.abc import Sequence

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
