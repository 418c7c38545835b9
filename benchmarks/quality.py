"""Detection quality on real categories: train (or load) a prior, calibrate, score variants.

    python benchmarks/quality.py --data ../shared/datasets --categories mvtec_bottle kolektorsdd \
        --budget-minutes 10 --variants default no_guidance stage1_only baseline

For each category: train a prior on train/good minus a 10 % hold-out under a wall-clock budget
(or --model DIR), calibrate every variant on the hold-out, score test/, and print one table.
All variants share the prior and the seeds. Results go to benchmarks/results/quality.{csv,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root

from benchmarks.variants import DESCRIPTIONS, VARIANTS, baseline_evaluation
from mdps_ray.api import build_scorer
from mdps_ray.config.method import MdpsConfig
from mdps_ray.config.overrides import apply_overrides
from mdps_ray.config.presets import preset
from mdps_ray.data.native import resolve_read_size
from mdps_ray.data.records import list_mvtec
from mdps_ray.data.splits import split_holdout
from mdps_ray.method.calibration import Calibration, is_anomalous
from mdps_ray.storage.checkpoints import load_prior, save_prior
from mdps_ray.workflows import Evaluation, calibrate_local, evaluate_local, final_priors, train_local_priors

METRICS = ["image_auroc", "pixel_auroc", "aupro", "f1_max", "ap", "psnr_normal", "ssim_normal", "seconds_per_image"]
BASELINE = ["baseline_image_auroc", "baseline_pixel_auroc"]
ALARMS = ["certified_fpr", "fpr_bound_90", "fpr_test_normals", "n_conformal"]
COLUMNS = ["category", "variant", *METRICS, *ALARMS, *BASELINE, "vs_baseline", "what_it_is"]


def run_category(root: Path, args: argparse.Namespace, base: MdpsConfig, out: Path) -> tuple[list[dict], str]:
    """One row per variant, and a line saying where the prior came from and how long it all took."""
    category = root.name
    started = time.monotonic()
    device = torch.device(args.device)
    train_records, holdout = split_holdout(list_mvtec(str(root), "train"), 0.1)
    test_records = list_mvtec(str(root), "test")
    model_dir = Path(args.model) if args.model else out / "models" / category
    base = resolve_read_size(base, [r.uri for r in train_records])  # tiling.read_size=native: this category's side
    prior_line = f"loaded from `{model_dir}`"
    if not (model_dir / "mdps.json").exists() or args.retrain:
        t0 = time.monotonic()
        trainers = train_local_priors(train_records, base, args.max_steps or 10**9, args.budget_minutes * 60, device)
        digest = save_prior(final_priors(trainers, base), base, str(model_dir))
        steps = "+".join(str(t.step_count) for t in trainers)
        loss = sum(sum(t.losses[-50:]) / 50 for t in trainers) / len(trainers)
        prior_line = (f"trained {steps} steps ({len(trainers)} prior(s)) in {time.monotonic() - t0:.0f} s, "
                      f"final loss {loss:.4f}, digest {digest}")
        print(f"[{category}] {prior_line}", flush=True)
    loaded = load_prior(str(model_dir))
    # the prior (and its training) from the model; how it is sampled and scored from the config under test
    method = loaded.config.model_copy(update={k: getattr(base, k) for k in ("sampler", "maps", "score", "runtime")})
    # the trivial baseline at the prior's read size, with the same maps and score, beside every row
    floor = baseline_evaluation(train_records, test_records, method, device).metrics
    rows = []
    for name in args.variants:
        if name == "baseline":
            ev = baseline_evaluation(train_records, test_records, method, device)
        else:
            cfg = apply_overrides(method, VARIANTS[name])
            cal = calibrate_local(build_scorer(loaded.unet, cfg, device), holdout, args.batch_size, device)
            ev = evaluate_local(build_scorer(loaded.unet, cfg, device, calibration=cal), test_records, args.batch_size,
                                device)
            ev.metrics.update(false_alarms(ev, cal))
        metrics = {k: ev.metrics.get(k, float("nan")) for k in METRICS + ALARMS}
        row = {"category": category, "variant": name, **metrics, **versus_baseline(metrics, floor, name),
               "what_it_is": DESCRIPTIONS[name]}
        print(" | ".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS), flush=True)
        rows.append(row)
    minutes = (time.monotonic() - started) / 60
    return rows, f"{category}: prior {prior_line}; {len(rows)} variants; {minutes:.1f} min in all"


def false_alarms(ev: Evaluation, cal: Calibration) -> dict[str, float]:
    """The rate calibration certifies beside the rate it gave: the test normals above the image threshold."""
    normal = torch.tensor([r.label == 0 for r in ev.records])
    flagged = is_anomalous(ev.scores[normal].double(), cal.score_threshold)
    return {"certified_fpr": float("nan") if cal.certified_fpr is None else cal.certified_fpr,
            "fpr_bound_90": float("nan") if cal.fpr_bound_90 is None else cal.fpr_bound_90,
            "fpr_test_normals": float(flagged.double().mean()) if bool(normal.any()) else float("nan"),
            "n_conformal": float(cal.n_conformal)}


def versus_baseline(metrics: dict[str, float], floor: dict[str, float], name: str) -> dict[str, object]:
    """The baseline's image / pixel AUROC and a flag naming each one the row does not beat."""
    short = [k.removesuffix("_auroc") for k in ("image_auroc", "pixel_auroc")
             if k in floor and not metrics.get(k, float("nan")) > floor[k]]
    flag = "-" if name == "baseline" else "ok" if not short else "BELOW BASELINE: " + ", ".join(short)
    return {"baseline_image_auroc": floor.get("image_auroc", float("nan")),
            "baseline_pixel_auroc": floor.get("pixel_auroc", float("nan")), "vs_baseline": flag}


def write_tables(rows: list[dict], out: Path, command: str, summary: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "quality.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "",
        *[f"- {line}" for line in summary],
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS) + " |")
    (out / "quality.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/datasets", help="MVTec-layout root holding categories")
    p.add_argument("--categories", nargs="+", default=["mvtec_bottle", "kolektorsdd"])
    p.add_argument("--budget-minutes", type=float, default=10.0, help="training wall time per category (a cap)")
    p.add_argument("--max-steps", type=int, default=None, help="training steps per category (default: the budget)")
    p.add_argument("--variants", nargs="+", default=[*VARIANTS, "baseline"], choices=[*VARIANTS, "baseline"])
    p.add_argument("--preset", default="default")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    p.add_argument("--model", help="use this trained model directory instead of training")
    p.add_argument("--retrain", action="store_true", help="train even if a model exists in --out")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    base = apply_overrides(preset(args.preset), args.overrides)
    out = Path(args.out)
    rows, summary = [], []
    for cat in args.categories:
        root = Path(args.data) / cat
        if not root.is_dir():
            print(f"skipping {cat}: {root} not found", file=sys.stderr)
            continue
        category_rows, line = run_category(root, args, base, out)
        rows += category_rows
        summary.append(line)
    write_tables(rows, out, "python " + " ".join(sys.argv), summary)
    (out / "quality_config.json").write_text(json.dumps(base.model_dump(mode="json"), indent=2))
    below = [r for r in rows if str(r["vs_baseline"]).startswith("BELOW")]
    for r in below:
        print(f"BELOW BASELINE: {r['category']} {r['variant']}: image / pixel AUROC {r['image_auroc']:.3f} / "
              f"{r['pixel_auroc']:.3f}, the mean-image baseline {r['baseline_image_auroc']:.3f} / "
              f"{r['baseline_pixel_auroc']:.3f}", file=sys.stderr)
    if any(r["variant"] == "default" for r in below):
        print("the default does not beat the trivial baseline on every category (exit 3)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
