"""Peak memory of decoding one large image, 16-bit against 8-bit RGB, each in a fresh process.

    python benchmarks/decode_memory.py --side 7000

Last line: ``decode_memory: side=<n> mb_8bit=<f> mb_16bit=<f> ratio=<f>`` (the peak RSS a decode adds over the
process after its imports). Target: ratio <= 2 (a 16-bit 7000² PNG cost +1.1 GB per decode with float64 maths).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

PROBE = """
import resource, sys
sys.path.insert(0, {root!r})
from mdps_ray.data.images import decode_image
data = open({path!r}, "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
decode_image(data, 64, max_pixels=10**9)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def added_mb(path: Path) -> float:
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", PROBE.format(root=root, path=str(path))], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=7000)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 65536, size=(args.side, args.side), dtype=np.uint16)
    with tempfile.TemporaryDirectory() as tmp:
        w, n = Path(tmp, "wide.png"), Path(tmp, "narrow.png")
        Image.fromarray(wide).save(w, compress_level=1)
        Image.fromarray((wide // 257).astype(np.uint8)).convert("RGB").save(n, compress_level=1)
        del wide
        mb16, mb8 = added_mb(w), added_mb(n)
    print(f"decode_memory: side={args.side} mb_8bit={mb8:.1f} mb_16bit={mb16:.1f} ratio={mb16 / max(mb8, 1e-9):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
