"""Distributed DDIM training job: the entry point of ``ray job submit``.

    ray job submit --working-dir . -- python jobs/train.py --config train.yaml
    ray job submit --working-dir . -- python jobs/train.py --data s3://bucket/mvtec/bottle \
        --out s3://bucket/models/bottle --max-minutes 60 --num-workers 4 --set use_gpu=true

Takes the same arguments as ``mdps train``; joins the cluster it is submitted to. Prints, per
category, the steps, the final loss, and the model URI (the last line).
"""

from __future__ import annotations

import argparse
import sys

from mdps_ray.cli import USER_ERRORS, add_train_args, cmd_train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return cmd_train(args)
    except USER_ERRORS as err:
        print(f"train: error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
