"""Batch scoring job: the entry point of ``ray job submit``.

    ray job submit --working-dir . -- python jobs/score.py \
        --model s3://bucket/models/bottle/model --data s3://bucket/archive/bottle --out s3://bucket/scores

Takes the same arguments as ``mdps score`` (``python jobs/score.py --help``); joins the cluster it
is submitted to (RAY_ADDRESS). The last line printed is the run directory.
"""

import sys

from mdps_ray.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["score", *sys.argv[1:]]))
