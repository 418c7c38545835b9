"""Throughput of the Ray scoring pipeline against the bare scorer loop, one run, same everything.

    python benchmarks/pipeline.py             # 384 images, ≈ 2 min per side
    python benchmarks/pipeline.py --images 96 # a short run, where the fixed start-up shows

Bare loop: decode + score batch by batch in this process (no writes). Pipeline: `run_score_job`
on an embedded Ray that is already up (its start-up is printed apart, as a cluster is up in
production), counting actor start-up, model load, decode tasks, map and Parquet writes, commit
and the reduce step. Same model (random weights, the default 64 px prior), images, batch size,
settings. The last line is ``ratio: <pipeline images/s / bare images/s>``.

The pipeline has a fixed cost per run (a fresh actor process imports torch and diffusers, ≈ 5 s on
two busy cores), so the ratio grows with the run; the default size is a small nightly batch,
where the steady state dominates as it does in production. Both sizes are in README.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from mdps_ray.api import build_scorer
from mdps_ray.config.jobs import ScoreJobConfig
from mdps_ray.config.overrides import apply_overrides
from mdps_ray.config.presets import DEFAULT
from mdps_ray.data.images import iter_batches
from mdps_ray.data.records import list_mvtec
from mdps_ray.data.synthetic import make_dataset
from mdps_ray.models.prior import build_unet
from mdps_ray.orchestration.cluster import init_ray
from mdps_ray.orchestration.score_pipeline import run_score_job
from mdps_ray.storage.checkpoints import save_prior


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=384)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--set", dest="overrides", action="append", default=[], help="method override key=value")
    args = p.parse_args(argv)
    cfg = apply_overrides(DEFAULT, ["sampler.mask.threshold=0.05", *args.overrides])
    backbone = cfg.maps.backbone
    with tempfile.TemporaryDirectory() as tmp:
        n_def = max(1, args.images // 12)
        root = make_dataset(Path(tmp), size=256, n_train=0, n_test_good=args.images - 3 * n_def,
                            n_test_defect=n_def)
        records = list_mvtec(str(root), "test")
        torch.manual_seed(0)
        unet = build_unet(cfg.prior)
        save_prior(unet, cfg, f"{tmp}/model")

        torch.set_num_threads(2)
        scorer = build_scorer(unet, cfg, "cpu")
        t0 = time.perf_counter()
        for y, ids, _ in iter_batches(records, cfg.read_size, args.batch_size):
            scorer.score(y, ids)
        bare = time.perf_counter() - t0

        t0 = time.perf_counter()
        init_ray()
        startup = time.perf_counter() - t0
        job = ScoreJobConfig(model=f"{tmp}/model", data=str(root), out=f"{tmp}/scores", batch_size=args.batch_size)
        t0 = time.perf_counter()
        summary = run_score_job(job)
        ray_time = time.perf_counter() - t0
        run = json.loads(Path(summary.run_dir, "run.json").read_text())
    n = len(records)
    assert summary.n_images == n and summary.n_errors == 0
    print(f"{n} images of 256 px → {cfg.prior.image_size} px prior, batch {args.batch_size}, backbone {backbone}, "
          f"n={cfg.sampler.stage2.n_samples}, 2 CPU cores")
    print(f"bare scorer loop : {bare:7.1f} s  {n / bare:6.3f} images/s")
    print(f"ray pipeline     : {ray_time:7.1f} s  {n / ray_time:6.3f} images/s  (+{startup:.1f} s embedded Ray start)")
    print("pipeline phases  : " + ", ".join(f"{k} {v:.1f} s" for k, v in run["phase_seconds"].items()))
    print(f"ratio: {bare / ray_time:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
