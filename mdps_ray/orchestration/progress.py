"""Progress bars on stderr: redrawn twice a second on a terminal, every 10 s otherwise (logs of
`ray job submit`, CI); ``MDPS_PROGRESS=0`` turns them off."""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def progress_bar(total: int | None, desc: str, unit: str) -> tqdm:
    """A tqdm bar on stderr sized for the current output."""
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=interactive,
                ncols=None if interactive else 100, mininterval=0.5 if interactive else 10.0,
                disable=os.environ.get("MDPS_PROGRESS", "1") == "0", leave=True)
