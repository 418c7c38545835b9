"""A development category with heterogeneous normals: a real category under varied acquisition.

    python benchmarks/devsets.py --source ../shared/datasets/kolektorsdd --out /tmp/dev/kolektorsdd_lit

Every image of the source (train and test, normal and defective alike) gets its own brightness,
contrast and gamma, drawn from a generator keyed by its path, as if taken under one of many
illuminations:

    x' = clip(gain · x^γ + offset, 0, 1)    gain ∈ [0.55, 1.05], offset ∈ [−0.1, 0.1], γ ∈ [0.7, 1.5]

(ranges that darken more than they brighten: the development categories are bright, and an image
clipped to white would carry neither texture nor defect)

Ground-truth masks are copied unchanged. The result is an MVTec-layout category that the quality
harness reads like any other (``--data /tmp/dev --categories kolektorsdd_lit``).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

GAIN, OFFSET, GAMMA = (0.55, 1.05), (-0.1, 0.1), (0.7, 1.5)


def acquisition(key: str) -> tuple[float, float, float]:
    """(gain, offset, γ) of one image, a function of its relative path only."""
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big"))
    return float(rng.uniform(*GAIN)), float(rng.uniform(*OFFSET)), float(rng.uniform(*GAMMA))


def relight(image: Image.Image, gain: float, offset: float, gamma: float) -> Image.Image:
    """The image under another illumination (any mode; the result keeps it)."""
    x = np.asarray(image, dtype=np.float64) / 255.0
    y = np.clip(gain * x**gamma + offset, 0.0, 1.0)
    return Image.fromarray((y * 255.0 + 0.5).astype(np.uint8), mode=image.mode)


def make_devset(source: Path, out: Path) -> int:
    """Write the relit copy of ``source`` under ``out``; returns the number of images relit."""
    n = 0
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(source)
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel.parts[0] in ("train", "test") and path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"):
            relight(Image.open(path), *acquisition(str(rel))).save(target.with_suffix(".png"))
            n += 1
        else:
            shutil.copyfile(path, target)  # ground truth, licences: as they are
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="an MVTec-layout category")
    p.add_argument("--out", required=True, help="where the relit category is written")
    args = p.parse_args(argv)
    n = make_devset(Path(args.source), Path(args.out))
    print(f"relit {n} images of {args.source} into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
