"""A worker node removed mid-run (ray.cluster_utils.Cluster: several raylets on this machine): every image
exactly once, with the scores of an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = r"""
import json, sys, threading, time
from pathlib import Path
import ray
from ray.cluster_utils import Cluster
from mdps_ray.config.jobs import ScoreJobConfig
from mdps_ray.orchestration.score_pipeline import run_score_job

model, data, out = sys.argv[1:4]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 300_000_000})
workers = [cluster.add_node(num_cpus=1, object_store_memory=300_000_000) for _ in range(2)]
ray.init(address=cluster.address)
cluster.wait_for_nodes()
job = dict(model=model, data=data, batch_size=2, num_actors=1)
reference = run_score_job(ScoreJobConfig(out=out + "/reference", run_id="r", **job))
removed = []

def remove_actor_node():
    staging = Path(out) / "lossy" / "r" / "_staging"
    while not (staging.exists() and any(staging.glob("part-*"))):
        time.sleep(0.1)
    actors = [a for a in ray.util.state.list_actors(filters=[("state", "=", "ALIVE")])
              if "ScoringWorker" in a.class_name]
    node = next(w for w in workers if w.node_id == actors[0].node_id)
    cluster.remove_node(node, allow_graceful=False)
    removed.append(time.time())

threading.Thread(target=remove_actor_node, daemon=True).start()
lossy = run_score_job(ScoreJobConfig(out=out + "/lossy", run_id="r", **job))
print("SUMMARY " + json.dumps({"removed": removed, "rows": lossy.n_images, "reference_rows": reference.n_images}))
ray.shutdown()
cluster.shutdown()
"""


def test_a_removed_worker_node_loses_and_duplicates_nothing(tiny_model: Path, synthetic_root: Path,
                                                            tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_model), str(synthetic_root), str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # Ray relays its raylets' warnings (the removed node's refused connections) to the driver's stdout,
    # before or after ours: the summary is the one marked line.
    marked = [line for line in proc.stdout.splitlines() if line.startswith("SUMMARY ")]
    assert len(marked) == 1, proc.stdout[-4000:]
    summary = json.loads(marked[0].removeprefix("SUMMARY "))
    assert summary["removed"], "the node holding the scoring actor was never removed"
    committed_at = (tmp_path / "lossy" / "r" / "_SUCCESS").stat().st_mtime
    assert summary["removed"][0] < committed_at  # removed mid-run, not after the commit

    def rows(name: str) -> dict[str, float]:
        table = pq.read_table(tmp_path / name / "r" / "results").to_pylist()
        assert len(table) == len({r["image_id"] for r in table})  # exactly once
        return {r["image_id"]: r["score"] for r in table}

    assert rows("lossy") == pytest.approx(rows("reference"), rel=1e-5, abs=1e-6)
    assert summary["rows"] == summary["reference_rows"] == len(rows("reference"))
