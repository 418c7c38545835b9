"""Calibration of the default method on a device, end to end: the check the first lent GPU runs before the sampler
benchmark (calibration crashed on CUDA once: its least squares asked for a driver CUDA's lstsq lacks).

    python benchmarks/gpu_calibrate.py --device cuda     # benchmarks/gpu.sh runs it first
    python benchmarks/gpu_calibrate.py --device cpu      # the CPU dry run (a CI test)

A random prior at the default size calibrates on 24 generated normal images (level model, mask threshold,
cross-fitted conformal threshold), then a 2^24 + 1 element quantile runs on the device. Last line:
``calibrate: device=<d> seconds=<f> certified_fpr=<f> level_features=<s> ok``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root

from mdps_ray.api import build_scorer
from mdps_ray.config.method import MdpsConfig
from mdps_ray.config.overrides import apply_overrides
from mdps_ray.core.masking import quantile_threshold
from mdps_ray.method.calibration import fit_calibration
from mdps_ray.models.prior import build_unet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--images", type=int, default=24)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cfg = apply_overrides(MdpsConfig(), ["sampler.stage1.n_samples=1", "sampler.stage2.n_samples=1"])
    torch.manual_seed(0)
    scorer = build_scorer(build_unet(cfg.prior).eval().requires_grad_(False), cfg, device)
    g = torch.Generator().manual_seed(0)
    side = cfg.read_size
    base = torch.rand((1, 3, side, side), generator=g) * 1.2 - 0.6
    normals = (base + 0.05 * torch.randn((args.images, 3, side, side), generator=g)).clamp(-1, 1)
    batches = [(normals[i:i + 8].to(device), [f"normal-{k}" for k in range(i, min(i + 8, args.images))])
               for i in range(0, args.images, 8)]
    start = time.monotonic()
    cal = fit_calibration(scorer, batches, target_fpr=0.1)
    big = quantile_threshold(torch.rand(2**24 + 1, device=device), 0.5)  # torch.quantile refuses > 2^24 elements
    seconds = time.monotonic() - start
    assert cal.level_model is not None and cal.mask_threshold is not None and abs(big - 0.5) < 1e-2
    print(f"calibrate: device={device.type} seconds={seconds:.2f} certified_fpr={cal.certified_fpr:.4f} "
          f"level_features={cal.level_model.features} ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
