"""Every fenced command of README.md, typed as written in a fresh copy of the checkout.

Each bash block is run as one script (exports carry over; the first failing command fails the test).
What is changed before running is listed in each scenario's SUBSTITUTIONS with its reason: the budgets
(2 CPU cores, no GPU, CI minutes), the placeholders a user fills in (`<run_id>`, `--model ...`), and the
flags that keep a test's Ray cluster to itself on a shared machine. Nothing else is touched.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.acceptance.readme import REPO, Block, block_with, blocks, fresh_checkout, run_script, user_env
from tests.helpers.infra import free_port, isolation_flags, kill_cluster, ray_temp_dir
from tests.helpers.readers import read_everywhere

pytestmark = pytest.mark.slow
EXCLUDED = {"make test": "the command that runs this suite (CI's own entry point): running it here would recurse"}
BOTTLE = REPO.parent / "shared" / "datasets" / "mvtec_bottle"
TRAIN = "mdps train --data ../shared/datasets/mvtec_bottle --out runs/bottle"  # the block that trains the model
needs_bottle = pytest.mark.skipif(not BOTTLE.is_dir(), reason=f"real data absent: {BOTTLE} (the README's path)")


def _substituted(block: Block, subs: dict[str, str]) -> list[str]:
    commands = block.commands()
    for old, new in subs.items():
        assert any(old in c for c in commands), f"README no longer has {old!r}: update this scenario"
        commands = [c.replace(old, new) for c in commands]
    return commands


def _walk(commands: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    proc = run_script(commands, cwd, env, timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # our commands print no traceback (lines Ray relays from its own actors carry a "(Name pid=…)" prefix:
    # with two Ray instances on one machine, Ray Train's placement-group cleaner logs one of its own)
    assert not re.search(r"^Traceback", out, re.M), out[-4000:]
    return out


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    return fresh_checkout(tmp_path)


def test_every_readme_command_belongs_to_a_walked_scenario() -> None:
    walked = [block_with(start) for start in ("make demo", TRAIN, "export RAY_AUTH_MODE", "mdps config show",
                                              "mkdir -p archive")]
    assert all(b in walked for b in blocks("bash")), "a README bash block that no acceptance scenario runs"
    commands = {c for b in walked for c in b.commands()}
    assert set(EXCLUDED) <= commands and len(blocks("python")) == 2  # the API snippet and the map reader


@needs_bottle
def test_a_new_user_walks_the_local_path(checkout: Path, tmp_path: Path) -> None:
    # the demo as README runs it: its 300 steps (at 30 its image AUROC was 0.26, and the check accepted that)
    env = user_env(tmp_path / "home")
    demo = [c for c in block_with("make demo").commands() if c.split("#")[0].strip() not in EXCLUDED]
    out = _walk(demo, checkout, env)
    [report] = list((checkout / "demo-out" / "scores").glob("*/report.html"))
    [check] = [line for line in out.splitlines() if line.startswith("demo check: image AUROC")]
    assert ">= 0.9" in check, check
    auroc = json.loads((report.parent / "metrics.json").read_text())["overall"]["image_auroc"]
    assert f"image AUROC {auroc:.3f}" in check and auroc >= 0.9

    subs = {"--max-minutes 10": "--max-minutes 10 --max-steps 20",  # CI minutes; the steps, not the clock, bound it
            "<run_id>": "$(ls runs/scores | grep -v '^_')"}  # what a user fills in from `mdps score`'s last line
    # (runs/scores also holds _ledger/, what the committed runs scored)
    out = _walk(_substituted(block_with(TRAIN), subs), checkout, env)
    [run] = [p for p in (checkout / "runs" / "scores").iterdir() if not p.name.startswith("_")]
    assert (checkout / "runs" / "scores" / "_ledger" / f"{run.name}.parquet").exists()
    assert (run / "_SUCCESS").exists() and (run / "report.html").exists() and run.name in out
    n_test = sum(1 for p in (BOTTLE / "test").rglob("*.png"))
    _same_rows_everywhere(run / "results", n_test)

    for name, src in zip(("a.png", "b.png"), sorted((BOTTLE / "test" / "broken_large").glob("*.png"))[:2],
                         strict=True):
        shutil.copy(src, checkout / name)
    [snippet] = [b for b in blocks("python") if "Detector" in b.text]
    (checkout / "snippet.py").write_text(snippet.text)
    out = _walk(["python snippet.py"], checkout, env)
    assert "tensor(" in out  # the printed scores and decisions
    [reader] = [b for b in blocks("python") if "read_map" in b.text]
    (checkout / "reader.py").write_text(reader.text.replace("<run_id>", run.name))
    assert "(64, 64) float32" in _walk(["python reader.py"], checkout, env)  # a row's map, read back

    _walk_the_nights(checkout, env)

    out = _walk(block_with("mdps config show").commands(), checkout, env)
    assert '"rho": 30' in out.replace(" ", "").replace('"rho":30', '"rho": 30')
    changed = [p.name for p in (checkout / "schemas").iterdir() if p.read_bytes() != (REPO / "schemas" / p.name)
               .read_bytes()]
    assert changed == [], f"`mdps config schema --write` changed the published schemas: {changed}"


def _walk_the_nights(checkout: Path, env: dict[str, str]) -> None:
    """README's night-by-night block after the model it trained: drift on the brightened night only, a comparison
    with a retrained candidate, a promotion and a rollback."""
    subs = {"--max-minutes 10": "--max-minutes 10 --max-steps 20"}  # CI minutes for the candidate
    out = _walk(_substituted(block_with("mkdir -p archive"), subs), checkout, env)
    assert "drift alert: exit 4" in out and "mdps: drift: night 2026-12-03 category archive" in out
    assert "night 2026-12-01" not in out and "night 2026-12-02" not in out
    trend = pq.read_table(checkout / "runs" / "nightly" / "_trend" / "trend.parquet").to_pylist()
    assert [(r["night"], r["images"], r["drifted"]) for r in trend] == [
        ("2026-12-01", 10, False), ("2026-12-02", 5, False), ("2026-12-03", 10, True)]
    [shadow] = [p for p in (checkout / "runs" / "shadow").iterdir() if not p.name.startswith("_")]
    [compared] = list((shadow / "_compare").iterdir())
    facts = json.loads((compared / "compare.json").read_text())
    assert facts["images_compared"] == 25 and facts["flipped"] == pq.read_table(compared / "flips.parquet").num_rows
    pointer = json.loads((checkout / "runs" / "bottle" / "model" / "_CURRENT.json").read_text())
    assert pointer["current"] == "." and pointer["previous"].startswith("versions/")  # promoted, then rolled back


def _same_rows_everywhere(results: Path, n: int) -> None:
    """pandas, pyarrow (table and dataset), DuckDB and polars read results/ as the same n rows."""
    frames = read_everywhere(results)
    for name, df in frames.items():
        assert len(df) == n, name
        got = df.sort_values("image_id").reset_index(drop=True)
        ref = frames["pandas"].sort_values("image_id").reset_index(drop=True)
        assert list(got["image_id"]) == list(ref["image_id"]) and list(got["score"]) == list(ref["score"]), name
        assert set(got["category"]) == set(ref["category"]), name


@pytest.fixture
def cluster_world(s3, synthetic_root: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The README's s3://bucket on a real S3 API, credentials in the user's environment, a Ray temp dir."""
    fs = s3.fs()
    if not fs.exists("bucket"):
        fs.mkdir("bucket")
    for prefix in ("mvtec/bottle", "archive/bottle"):
        fs.put(str(synthetic_root), f"bucket/{prefix}", recursive=True)
    temp = ray_temp_dir()
    world = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_ENDPOINT_URL": s3.endpoint,
             "AWS_EC2_METADATA_DISABLED": "true", "temp_dir": str(temp)}
    yield world
    kill_cluster(temp)


def test_the_cluster_path_as_written(checkout: Path, tmp_path: Path, cluster_world: dict[str, str], s3) -> None:
    temp = Path(cluster_world.pop("temp_dir"))
    dashboard = free_port()
    subs = {
        # a cluster of this test's own on a shared CI machine (loopback, free ports, 2 CPUs, its temp dir)
        "ray start --head": "ray start --head " + " ".join(isolation_flags(temp, free_port(), dashboard)),
        "http://127.0.0.1:8265": f"http://127.0.0.1:{dashboard}",
        "--num-workers 4": "--num-workers 2", "use_gpu=true": "use_gpu=false",  # 2 CPU cores, no GPU
        "--max-minutes 60": "--max-minutes 60 --max-steps 10",  # CI minutes
        "--model ...": "--model s3://bucket/models/bottle/model",  # the placeholder: the model trained above
    }
    out = _walk(_substituted(block_with("export RAY_AUTH_MODE"), subs), checkout, user_env(tmp_path / "home",
                                                                                            **cluster_world))
    assert "Authentication required" not in out and out.count("succeeded") >= 3
    fs = s3.fs()
    assert fs.exists("bucket/models/bottle/model/calibration.json")
    runs = {p.rsplit("/", 1)[-1] for p in fs.ls("bucket/scores")}
    [plain] = [r for r in runs if r.startswith("run-")]
    [night] = [r for r in runs if r.startswith("nightly-")]
    n_test = len([p for p in fs.find("bucket/archive/bottle/test") if p.endswith(".png")])
    parts = [p for p in fs.find(f"bucket/scores/{plain}/results") if p.endswith(".parquet")]
    assert sum(pq.read_table(io.BytesIO(fs.cat_file(p))).num_rows for p in parts) == n_test
    # the nightly came after the plain run with the same model and config: nothing new, an empty committed run
    assert fs.exists(f"bucket/scores/{night}/_SUCCESS") and not fs.exists(f"bucket/scores/{night}/results")
    assert re.search(r"scored 0 images", out)
