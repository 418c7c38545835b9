"""Training speed of `mdps train` (Ray Train, 1 and 2 workers) against a bare in-process loop, side by side.

    python benchmarks/train_speed.py               # 120 steps per side, the default prior (64 px)
    python benchmarks/train_speed.py --steps 40    # a short run

Bare loop: the same :class:`~mdps_ray.method.training.PriorTrainer`, prior, batch and batch rule
(``train_loop._batch``) in this process with every core, images already decoded in memory. Product path:
``run_train_job`` on an embedded Ray with ``max_steps`` set (calibration off); its loop's own steps and
seconds (``model_card.json``: ``steps`` / ``train_seconds``, counted from the first step, so Ray's start, the
decode tasks and the final save are apart). The last line is
``train_speed: ratio=<1-worker steps/s ÷ bare steps/s> steps_per_s=<f> bare_steps_per_s=<f>``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from mdps_ray.config.jobs import TrainJobConfig
from mdps_ray.config.presets import DEFAULT
from mdps_ray.data.images import decode_image
from mdps_ray.data.records import list_mvtec
from mdps_ray.data.synthetic import make_dataset
from mdps_ray.method.training import PriorTrainer
from mdps_ray.models.prior import build_unet
from mdps_ray.orchestration.cluster import init_ray
from mdps_ray.orchestration.train_job import run_train_job
from mdps_ray.orchestration.train_loop import _batch


def bare_steps_per_s(root: Path, steps: int) -> float:
    """Steps per second of the trainer alone, every core, uint8 images in memory (as a worker holds them)."""
    cfg = DEFAULT
    torch.set_num_threads(os.cpu_count() or 1)
    records = list_mvtec(str(root), "train")
    x = torch.stack([decode_image(Path(r.uri).read_bytes(), cfg.read_size) for r in records])
    images = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    keys = list(range(len(records)))
    torch.manual_seed(cfg.train.seed)
    trainer = PriorTrainer(build_unet(cfg.prior), cfg.prior, cfg.train, torch.Generator().manual_seed(cfg.train.seed))
    x0, batch_keys = _batch(images, keys, cfg.train.batch_size, cfg.train.seed, 0, 0)
    trainer.step(x0, batch_keys)  # warm-up, as the product's first step is before its clock's first tick
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        x0, batch_keys = _batch(images, keys, cfg.train.batch_size, cfg.train.seed, step, 0)
        trainer.step(x0, batch_keys)
    return steps / (time.perf_counter() - t0)


def product_steps_per_s(root: Path, out: Path, steps: int, workers: int) -> float:
    job = TrainJobConfig(data=str(root), out=str(out), max_steps=steps, num_workers=workers, calibrate=False,
                         checkpoint_every=max(steps, 1))
    [trained] = run_train_job(job)
    card = json.loads((Path(trained.model_uri) / "model_card.json").read_text())
    return float(card["steps"]) / float(card["train_seconds"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=120)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_dataset(Path(tmp), size=64, n_train=64, n_test_good=0, n_test_defect=0)
        init_ray()
        one = product_steps_per_s(root, Path(tmp) / "one", args.steps, 1)
        two = product_steps_per_s(root, Path(tmp) / "two", args.steps, 2)
        bare = bare_steps_per_s(root, args.steps)
    print(f"mdps train, 2 workers: {two:.3f} steps/s ({two / bare:.3f} of the bare loop)")
    print(f"train_speed: ratio={one / bare:.3f} steps_per_s={one:.3f} bare_steps_per_s={bare:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
