"""``mdps demo``: the whole story offline on 2 CPU cores.

A procedural MVTec-layout dataset (or ``--data``), a prior trained in-process for a fixed number of
steps (so its result is the same on a busy and a quiet machine; only the time differs), calibration on
held-out normal images, the scoring job on an embedded Ray (Parquet results, maps, metrics from the
reduce step, ``_SUCCESS``), ``report.html``, and a closing check of the detection it got.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mdps_ray.api import build_scorer
from mdps_ray.cli.commands import DEMO_STEPS
from mdps_ray.cli.tables import metrics_table
from mdps_ray.config.jobs import ScoreJobConfig
from mdps_ray.config.method import MdpsConfig
from mdps_ray.data.native import resolve_read_size
from mdps_ray.data.records import list_mvtec
from mdps_ray.data.splits import split_holdout
from mdps_ray.data.synthetic import make_dataset
from mdps_ray.orchestration.progress import progress_bar
from mdps_ray.orchestration.score_pipeline import run_score_job
from mdps_ray.storage.checkpoints import save_calibration, save_prior
from mdps_ray.visualization.report import build_report
from mdps_ray.workflows import calibrate_local, train_local

EXPECTED_AUROC = 0.9  # what the demo's prior must reach on the generated set


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its outputs, and its metrics."""

    run_dir: str
    report: str
    metrics: dict[str, Any]
    steps: int


def run_demo(config: MdpsConfig, out: Path, data: Path | None, train_seconds: float | None, max_steps: int,
             batch_size: int = 8, log: bool = True) -> DemoResult:
    """Train → calibrate → score on an embedded Ray → report."""
    begin = time.monotonic()
    device = torch.device("cpu")
    out.mkdir(parents=True, exist_ok=True)
    root = data or make_dataset(out / "data", size=128, n_train=48, n_test_good=8, n_test_defect=4)
    train_records, holdout = split_holdout(list_mvtec(str(root), "train"), 0.15)
    config = resolve_read_size(config, [r.uri for r in train_records])
    start = time.monotonic()
    cap = "" if train_seconds is None else f", ≤ {train_seconds:.0f} s"
    with progress_bar(max_steps, f"training prior ({max_steps} steps{cap})", "step") as bar:

        def on_step(step: int, loss: float) -> None:
            bar.update(1)
            if step % 25 == 0:
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

        trainer = train_local(train_records, config, max_steps, train_seconds, device, on_step=on_step)
    unet = trainer.final_unet()
    model = str(out / "model")
    digest = save_prior(unet, config, model)
    _say(log, f"trained {trainer.step_count} steps in {time.monotonic() - start:.0f} s "
              f"(final loss {sum(trainer.losses[-20:]) / max(1, len(trainer.losses[-20:])):.4f}); model {model}")
    if trainer.step_count < max_steps:
        _say(log, f"warning: --train-seconds stopped training at {trainer.step_count} of {max_steps} steps; "
                  "the demo's result now depends on this machine's load")
    _say(log, f"calibrating on {len(holdout)} held-out normal images ...")
    scorer = build_scorer(unet, config, device)
    calibration = calibrate_local(scorer, holdout, batch_size, device, config_hash=config.digest(), model_digest=digest)
    save_calibration(calibration, model)
    _say(log, f"calibrated on {calibration.n_images} held-out normal images")
    summary = run_score_job(ScoreJobConfig(model=model, data=str(root), out=str(out / "scores"), batch_size=batch_size))
    report = build_report(summary.run_dir)
    overall = summary.metrics["overall"]
    _say(log, metrics_table(summary.metrics))
    _say(log, f"results: {summary.run_dir}/results/  report: {report}")
    _say(log, demo_verdict(overall, trainer.step_count, max_steps, data is None))
    _say(log, f"demo finished in {time.monotonic() - begin:.0f} s")
    return DemoResult(summary.run_dir, report, overall, trainer.step_count)


def _say(enabled: bool, text: str) -> None:
    if enabled:
        print(text, flush=True)


def demo_verdict(overall: dict[str, Any], steps: int, max_steps: int, generated: bool) -> str:
    """One line: is the demo's detection what it should be, and if not, the likely reason."""
    auroc = overall.get("image_auroc")
    if auroc is None:
        return "demo check: no labelled images were scored, so no AUROC to check"
    if auroc >= EXPECTED_AUROC:
        return f"demo check: image AUROC {auroc:.3f} >= {EXPECTED_AUROC}: the method separates the defects as expected"
    if steps < max_steps:
        why = f"training was cut at {steps} of {max_steps} steps by --train-seconds"
    elif max_steps < DEMO_STEPS:
        why = f"{max_steps} training steps is fewer than the demo's {DEMO_STEPS}"
    elif not generated:
        why = "this is not the generated set, whose expectation this is"
    else:
        why = "unexpected for the generated set: please report it with this output"
    return f"demo check: image AUROC {auroc:.3f} < {EXPECTED_AUROC} expected: {why}"
