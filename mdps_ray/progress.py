"""Progress bars and closing summary tables for the command line (stderr bars, stdout tables).

Bars redraw twice a second on a terminal and every 10 s otherwise (logs of `ray job submit`,
CI); ``MDPS_PROGRESS=0`` turns them off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm


def progress_bar(total: int | None, desc: str, unit: str) -> tqdm:
    """A tqdm bar on stderr sized for the current output."""
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=interactive,
                ncols=None if interactive else 100, mininterval=0.5 if interactive else 10.0,
                disable=os.environ.get("MDPS_PROGRESS", "1") == "0", leave=True)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table; floats to 4 decimals, None as '–', numbers right-aligned."""

    def cell(v: Any) -> str:
        if v is None:
            return "–"
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float) or row[i] is None for row in rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        cols = zip(cells, widths, numeric, strict=True)
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in cols).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in text)])


METRIC_COLUMNS = ("n_images", "n_anomalous", "image_auroc", "pixel_auroc", "aupro", "f1_max")


def metrics_table(metrics: dict[str, Any]) -> str:
    """The closing table of a scoring run: one row per category and one for all (``metrics.json``)."""
    parts = [*sorted(metrics.get("per_category", {}).items()), ("all", metrics.get("overall", {}))]
    rows = [[name, *(_number(k, m.get(k)) for k in METRIC_COLUMNS)] for name, m in parts]
    return format_table(["category", *METRIC_COLUMNS], rows)


def _number(key: str, v: Any) -> Any:
    """Counts (``n_*``) as int, metrics as float, absent or NaN as None."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    return int(v) if key.startswith("n_") else float(v)
