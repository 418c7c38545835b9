"""A procedural MVTec-layout dataset with realistic defects, for the demo and the tests.

Normal images: a textured, lit disc ("a bottle seen from above") on a dark background with
per-image jitter in position, radius, texture phase and brightness. Defects: a scratch (a thin
bright line), a stain (a dark blob) or a crack (a dark polyline), each with its exact mask.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DEFECTS = ("scratch", "stain", "crack")


def _normal(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    cx, cy = 0.5 + rng.normal(0, 0.015, 2)
    r = 0.34 + rng.normal(0, 0.01)
    d = np.hypot(xx - cx, yy - cy)
    phase = rng.uniform(0, 2 * np.pi)
    ring = 0.5 + 0.25 * np.sin(d * 60 + phase)
    light = 0.75 + 0.25 * (1 - d / r)
    disc = np.clip((r - d) * size / 1.5, 0, 1)
    base = np.stack([0.35 * ring * light, 0.55 * ring * light, 0.30 * ring * light], -1)
    img = disc[..., None] * base + (1 - disc[..., None]) * 0.06
    img *= rng.uniform(0.92, 1.08)
    img += rng.normal(0, 0.01, img.shape)
    return np.clip(img, 0, 1)


def _defect(rng: np.random.Generator, size: int, kind: str) -> tuple[Image.Image, Image.Image]:
    """An RGBA overlay and its mask for one defect inside the disc."""
    overlay = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    mask = Image.new("L", (size, size), 0)
    draw, mdraw = ImageDraw.Draw(overlay), ImageDraw.Draw(mask)
    c = size / 2 + rng.normal(0, size * 0.08, 2)
    s = size * rng.uniform(0.06, 0.12)
    if kind == "scratch":
        a = rng.uniform(0, np.pi)
        p = [tuple(c - s * np.array([np.cos(a), np.sin(a)])), tuple(c + s * np.array([np.cos(a), np.sin(a)]))]
        w = max(1, size // 48)
        draw.line(p, fill=(235, 235, 220, 255), width=w)
        mdraw.line(p, fill=255, width=w)
    elif kind == "stain":
        box = [c[0] - s / 2, c[1] - s / 3, c[0] + s / 2, c[1] + s / 3]
        draw.ellipse(box, fill=(60, 30, 10, 230))
        mdraw.ellipse(box, fill=255)
    else:
        pts = [tuple(c)]
        for _ in range(4):
            pts.append(tuple(np.array(pts[-1]) + rng.normal(0, s / 2, 2)))
        w = max(1, size // 40)
        draw.line(pts, fill=(5, 5, 5, 255), width=w)
        mdraw.line(pts, fill=255, width=w)
    return overlay, mask


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((arr * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_dataset(
    root: Path,
    size: int = 64,
    n_train: int = 40,
    n_test_good: int = 8,
    n_test_defect: int = 4,
    seed: int = 0,
    category: str = "synthetic",
) -> Path:
    """Write ``<root>/<category>/{train/good, test/good, test/<defect>, ground_truth/<defect>}``."""
    rng = np.random.default_rng(seed)
    base = root / category
    for split, n in (("train", n_train), ("test", n_test_good)):
        (base / split / "good").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (base / split / "good" / f"{i:03d}.png").write_bytes(_png(_normal(rng, size)))
    for kind in DEFECTS:
        (base / "test" / kind).mkdir(parents=True, exist_ok=True)
        (base / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n_test_defect):
            img = Image.fromarray((_normal(rng, size) * 255).round().astype(np.uint8)).convert("RGBA")
            overlay, mask = _defect(rng, size, kind)
            Image.alpha_composite(img, overlay).convert("RGB").save(base / "test" / kind / f"{i:03d}.png")
            mask.save(base / "ground_truth" / kind / f"{i:03d}_mask.png")
    return base
