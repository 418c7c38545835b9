"""Batch scoring job: the entry point of ``ray job submit``.

    ray job submit --working-dir . -- python jobs/score.py \
        --model s3://bucket/models/bottle/model --data s3://bucket/archive/bottle --out s3://bucket/scores

Takes the same arguments as ``mdps score``; joins the cluster it is submitted to (RAY_ADDRESS).
The last line printed is the run directory.
"""

from __future__ import annotations

import argparse
import sys

from mdps_ray.cli import USER_ERRORS, add_score_args, cmd_score


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_score_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return cmd_score(args)
    except USER_ERRORS as err:
        print(f"score: error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
