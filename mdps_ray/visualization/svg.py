"""Inline SVG charts for the report: curves and histograms with ticked axes, and the map's colour key.

Every chart is a plot area of ``W × H`` px inside margins that hold the tick labels; values are
mapped linearly from their range onto it. Titles and labels are HTML-escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

W, H, LEFT, RIGHT, TOP, BOTTOM = 300, 220, 46, 14, 24, 38
NORMAL, ANOMALOUS, UNLABELLED = "#2ca02c", "#d62728", "#1f77b4"


def _fmt(v: float) -> str:
    return f"{v:.3g}"


class Axes:
    """A linear map from data ranges onto the plot area, and the SVG of its frame and ticks."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float]) -> None:
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range

    def x(self, v: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return LEFT + (W - LEFT - RIGHT) * (min(max(v, self.x0), self.x1) - self.x0) / span

    def y(self, v: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return H - BOTTOM - (H - TOP - BOTTOM) * (min(max(v, self.y0), self.y1) - self.y0) / span

    def frame(self, title: str, xlabel: str, ylabel: str, n_ticks: int = 5) -> list[str]:
        esc = html.escape
        parts = [f'<svg width="{W}" height="{H}" role="img" aria-label="{esc(title)}">',
                 f'<text x="{LEFT}" y="15" font-size="12">{esc(title)}</text>',
                 f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" '
                 'fill="none" stroke="#888"/>']
        for v in np.linspace(self.x0, self.x1, n_ticks):
            x = self.x(float(v))
            parts.append(f'<line class="tick" x1="{x:.1f}" y1="{H - BOTTOM}" x2="{x:.1f}" y2="{H - BOTTOM + 4}" '
                         f'stroke="#444"/><text x="{x - 9:.1f}" y="{H - BOTTOM + 15}" font-size="10">'
                         f"{_fmt(float(v))}</text>")
        for v in np.linspace(self.y0, self.y1, n_ticks):
            y = self.y(float(v))
            parts.append(f'<line class="tick" x1="{LEFT - 4}" y1="{y:.1f}" x2="{LEFT}" y2="{y:.1f}" stroke="#444"/>'
                         f'<text x="4" y="{y + 3:.1f}" font-size="10">{_fmt(float(v))}</text>')
        parts.append(f'<text x="{(LEFT + W - RIGHT) // 2 - 20}" y="{H - 4}" font-size="11">{esc(xlabel)}</text>'
                     f'<text x="{LEFT + 4}" y="{TOP + 12}" font-size="11">{esc(ylabel)}</text>')
        return parts

    def vline(self, v: float, label: str) -> str:
        x = self.x(v)
        return (f'<line class="threshold" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{H - BOTTOM}" stroke="#000" '
                f'stroke-dasharray="4"/><text x="{x + 3:.1f}" y="{H - BOTTOM - 6}" font-size="10">'
                f"{html.escape(label)}</text>")


def curve(xs: np.ndarray, ys: np.ndarray, title: str, xlabel: str, ylabel: str, xmax: float = 1.0) -> str:
    """A line chart of (xs, ys) over [0, xmax] × [0, 1]."""
    ax = Axes((0.0, xmax), (0.0, 1.0))
    pts = " ".join(f"{ax.x(float(x)):.1f},{ax.y(float(y)):.1f}" for x, y in zip(xs, ys, strict=True))
    return "".join([*ax.frame(title, xlabel, ylabel),
                    f'<polyline points="{pts}" fill="none" stroke="{UNLABELLED}" stroke-width="2"/></svg>'])


def histogram(groups: Sequence[tuple[str, Sequence[float], str]], threshold: float | None, title: str,
              bins: int = 20) -> str:
    """Counts of each (name, values, colour) group in shared bins, the threshold as a dashed line, a key."""
    values = [v for _, vs, _ in groups for v in vs]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if threshold is not None:
        lo, hi = min(lo, threshold), max(hi, threshold)
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    counts = [np.histogram(list(vs), edges)[0] for _, vs, _ in groups]
    top = max([1, *(int(c.max()) for c in counts if c.size)])
    ax = Axes((float(edges[0]), float(edges[-1])), (0.0, float(top)))
    parts = ax.frame(title, "image score", "images")
    width = (ax.x(float(edges[1])) - ax.x(float(edges[0]))) / max(1, len(groups))
    for k, ((_, _, colour), c) in enumerate(zip(groups, counts, strict=True)):
        for i, n in enumerate(c):
            x, y = ax.x(float(edges[i])) + k * width, ax.y(float(n))
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{ax.y(0.0) - y:.1f}" '
                         f'fill="{colour}"/>')
    if threshold is not None:
        parts.append(ax.vline(threshold, f"threshold {_fmt(threshold)}"))
    for k, (name, vs, colour) in enumerate(groups):
        parts.append(f'<rect x="{W - 110}" y="{TOP + 4 + 13 * k}" width="9" height="9" fill="{colour}"/>'
                     f'<text x="{W - 98}" y="{TOP + 12 + 13 * k}" font-size="10">'
                     f"{html.escape(name)} ({len(vs)})</text>")
    parts.append("</svg>")
    return "".join(parts)


def colour_key(hi: float, ramp: np.ndarray) -> str:
    """The anomaly-map colour scale: a gradient bar from 0 to ``hi`` in the colours of ``ramp`` (N, 3) uint8."""
    stops = "".join(f'<stop offset="{i / (len(ramp) - 1):.3f}" stop-color="rgb({r},{g},{b})"/>'
                    for i, (r, g, b) in enumerate(ramp.tolist()))
    return (f'<svg class="key" width="{W}" height="44" role="img" aria-label="anomaly map colour key">'
            f'<defs><linearGradient id="heat">{stops}</linearGradient></defs>'
            f'<text x="4" y="12" font-size="11">anomaly map value (same scale in every panel)</text>'
            f'<rect x="4" y="16" width="{W - 60}" height="12" fill="url(#heat)" stroke="#888"/>'
            f'<text x="4" y="40" font-size="10">0</text>'
            f'<text x="{W - 74}" y="40" font-size="10">{_fmt(hi)}</text></svg>')
