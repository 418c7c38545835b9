"""Distributed DDIM training job: the entry point of ``ray job submit``.

    ray job submit --working-dir . -- python jobs/train.py --config train.yaml
    ray job submit --working-dir . -- python jobs/train.py --data s3://bucket/mvtec/bottle \
        --out s3://bucket/models/bottle --max-minutes 60 --num-workers 4 --set use_gpu=true

Takes the same arguments as ``mdps train`` (``python jobs/train.py --help``); joins the cluster it
is submitted to. Prints, per category, the steps, the final loss, and the model URI (the last line).
"""

import sys

from mdps_ray.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
