"""Archive scale: the scoring job's own overhead at 10³–10⁵ images, with a zero-cost scorer.

    python benchmarks/scale.py           # local 10³, 10⁴, 10⁵; moto S3 10³, 10⁴; nightly with a 10⁵-row history
    python benchmarks/scale.py --quick   # local 10³, 10⁴; moto 10³; nightly with a 10⁴-row history (CI-sized)

Each case runs in its own process (so driver peak RSS is per case) on an embedded Ray that is up
before the clock starts: the *real* pipeline (listing → manifest → Ray Data → actors → staging →
commit → ledger → reduce → ``_SUCCESS``) with the zero-cost scorer double
(``mdps_ray/testing/scorer_double.py``) in the actors, so the figures are the system's, not the
UNet's. Images are 64 px PNGs, a few distinct ones written under N names (flat prefix). On moto,
requests are counted from moto's own request log. The nightly case lists 10³ new images against
an output prefix whose history holds H scored rows (one committed run written directly), with
the ledger, and with no ledger (the first night after an upgrade: the ledger is rebuilt).

The last line: ``scale: local_ips=… s3_ips=… rss_growth_mb=… objects_per_image=… nightly_plan_s=…``
(local at the largest N, moto at its largest N, driver peak-RSS growth from the smallest to the
largest local N, objects written per image at the largest local N, nightly plan seconds with the
largest history).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve()
BATCH = 8
NEW_TONIGHT = 1_000
UPLOADS = {"auto": None, "async": True, "sync": False}


def _pngs(k: int = 8, side: int = 64) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(k):
        base = rng.integers(0, 255, (side // 8, side // 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((side, side), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _local_images(folder: Path, n: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pngs = _pngs()
    seeds = [folder / f".seed{j}.bin" for j in range(len(pngs))]
    for path, data in zip(seeds, pngs, strict=True):
        path.write_bytes(data)
    for i in range(start, start + n):
        os.link(seeds[i % len(seeds)], folder / f"img_{i:07d}.png")
    for path in seeds:
        path.unlink()


class Moto:
    """moto_server on loopback with its request log in a file (each request one line)."""

    def __init__(self, log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = log
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p",
                                      str(self.port)], stdout=subprocess.DEVNULL, stderr=log.open("w"))
        for _ in range(150):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        self.so = {"key": "bench", "secret": "bench-secret", "client_kwargs":
                   {"endpoint_url": f"http://127.0.0.1:{self.port}"}}

    def requests(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for m in re.finditer(r'"(GET|PUT|HEAD|POST|DELETE) ', self.log.read_text(errors="replace")):
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
        return counts

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class PeakRss:
    """The driver's peak resident set size while running, sampled every 20 ms."""

    def __init__(self) -> None:
        import psutil

        self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def _model(work: Path) -> str:
    import torch

    from mdps_ray.config.overrides import apply_overrides
    from mdps_ray.config.presets import DEFAULT
    from mdps_ray.models.prior import build_unet
    from mdps_ray.storage.checkpoints import save_prior

    cfg = apply_overrides(DEFAULT, ["sampler.mask.threshold=0.05"])
    torch.manual_seed(0)
    save_prior(build_unet(cfg.prior), cfg, str(work / "model"))
    return str(work / "model")


def _watch_staging(record: dict[str, Any]) -> None:
    """Record the staged parts and their bytes when the commit starts (the staging area is gone after)."""
    from mdps_ray.orchestration import score_pipeline
    from mdps_ray.storage.uris import filesystem

    real = score_pipeline.commit

    def commit(paths: Any, table: Any, so: Any) -> None:
        fs, path = filesystem(paths.staging, so)
        found = fs.find(path, detail=True)
        record["staged_parts"] = sum(1 for p in found if p.endswith(".parquet"))
        record["staging_mb"] = sum(v["size"] for v in found.values()) / 2**20
        real(paths, table, so)

    score_pipeline.commit = commit


def _objects(root: str, so: dict[str, Any]) -> int:
    from mdps_ray.storage.uris import filesystem

    fs, path = filesystem(root, so)
    return len(fs.find(path))


def case_score(store: str, n: int, work: Path) -> dict[str, Any]:
    from mdps_ray.config.jobs import ScoreJobConfig
    from mdps_ray.orchestration.cluster import init_ray
    from mdps_ray.orchestration.score_pipeline import run_score_job

    model, moto = _model(work), None
    t0 = time.perf_counter()
    if store == "local":
        data, out, so = str(work / "archive"), str(work / "out"), {}
        _local_images(work / "archive", n)
    else:
        moto = Moto(work / "moto.log")
        so = moto.so
        fs = moto_fs(so)
        fs.mkdir("bench")
        pngs = _pngs()
        fs.pipe({f"bench/archive/img_{i:07d}.png": pngs[i % len(pngs)] for i in range(n)}, batch_size=64)
        data, out = "s3://bench/archive", "s3://bench/out"
    make_s = time.perf_counter() - t0
    init_ray()
    record: dict[str, Any] = {"case": store, "n": n, "make_s": round(make_s, 1)}
    _watch_staging(record)
    before = moto.requests() if moto else {}
    job = ScoreJobConfig(model=model, data=data, out=out, batch_size=BATCH, storage_options=so,
                         async_uploads=UPLOADS[os.environ.get("SCALE_UPLOADS", "auto")])
    with PeakRss() as rss:
        t0 = time.perf_counter()
        summary = run_score_job(job, scorer_double=True)
        seconds = time.perf_counter() - t0
    assert summary.n_images == n and summary.n_errors == 0, summary
    run = json.loads(_read(f"{summary.run_dir}/run.json", so))
    written = _objects(summary.run_dir, so) + _objects(f"{out}/_ledger", so) + record["staged_parts"]
    record.update(seconds=round(seconds, 2), ips=round(n / seconds, 1), peak_rss_mb=round(rss.peak / 2**20, 1),
                  objects_per_image=round(written / n, 3), phases=run["phase_seconds"])
    if moto:
        after = moto.requests()
        record["requests_per_image"] = round(sum(after.values()) - sum(before.values()), 1) / n
        record["requests"] = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        moto.stop()
    return record


def moto_fs(so: dict[str, Any]) -> Any:
    import s3fs

    return s3fs.S3FileSystem(**so)


def _read(uri: str, so: dict[str, Any]) -> bytes:
    from mdps_ray.storage.uris import read_bytes

    return read_bytes(uri, so)


def case_nightly(history: int, work: Path) -> dict[str, Any]:
    import pyarrow as pa

    from mdps_ray.config.jobs import ScoreJobConfig
    from mdps_ray.orchestration.score_models import load_models
    from mdps_ray.orchestration.score_plan import load_or_list_manifest, method_config
    from mdps_ray.storage.ledger import ledger_dir, write_entry
    from mdps_ray.storage.results import rows_to_table
    from mdps_ray.storage.runs import RunPaths, commit, finalize
    from mdps_ray.storage.uris import remove

    model = _model(work)
    _local_images(work / "archive", NEW_TONIGHT, start=history)  # tonight's new images
    out = str(work / "out")
    job = ScoreJobConfig(model=model, data=str(work / "archive"), out=out, incremental=True, batch_size=BATCH)
    models = load_models(job, method_config)
    cfg, digest = models.first.cfg, models.digest
    old = RunPaths(out, "nightly-history")
    table = rows_to_table([])
    cols = {f.name: pa.nulls(history, f.type) for f in table.schema}
    cols.update(run_id=pa.array(["nightly-history"] * history), image_id=pa.array([f"old/{i}" for i in range(history)]),
                category=pa.array(["archive"] * history), status=pa.array(["ok"] * history),
                model_digest=pa.array([digest] * history), config_hash=pa.array([cfg.digest()] * history),
                content_key=pa.array([f"{i:024x}" for i in range(history)]), score=pa.array([0.1] * history))
    table = pa.table(cols, schema=table.schema)
    commit(old, table)
    write_entry(old, table)
    finalize(old, {}, {"counts": {"rows": history, "errors": 0}})
    record: dict[str, Any] = {"case": "nightly", "history": history, "new": NEW_TONIGHT}
    for label in ("with_ledger_s", "rebuild_ledger_s", "with_ledger_again_s"):
        if label == "rebuild_ledger_s":
            remove(ledger_dir(out))  # a prefix written before the ledger: the first night rebuilds it
        tonight = RunPaths(out, f"nightly-{label}")
        t0 = time.perf_counter()
        manifest = load_or_list_manifest(job, tonight, models)
        record[label] = round(time.perf_counter() - t0, 3)
        assert manifest.num_rows == NEW_TONIGHT, manifest.num_rows
        shutil.rmtree(work / "out" / tonight.run_id, ignore_errors=True)
    return record


def _child(args: argparse.Namespace) -> int:
    work = Path(args.work)
    rec = case_nightly(args.n, work) if args.case == "nightly" else case_score(args.case, args.n, work)
    print("RESULT " + json.dumps(rec), flush=True)
    return 0


def _run_case(case: str, n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"scale-{case}-{n}-") as work:
        proc = subprocess.run([sys.executable, str(HERE), "--case", case, "--n", str(n), "--work", work,
                               "--uploads", os.environ["SCALE_UPLOADS"]],
                              capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
            raise SystemExit(f"case {case} n={n} failed (exit {proc.returncode})")
        rec = json.loads(lines[-1][len("RESULT "):])
    print(json.dumps(rec), flush=True)
    return rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N ≤ 10⁴ (CI-sized)")
    p.add_argument("--uploads", choices=sorted(UPLOADS), default="auto",
                   help="the job's async_uploads: auto (the default: off on CPU actors), async, sync")
    p.add_argument("--case", choices=["local", "s3", "nightly"], help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.environ["SCALE_UPLOADS"] = args.uploads
    if args.case:
        return _child(args)
    local_ns = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    s3_ns = [1_000] if args.quick else [1_000, 10_000]
    histories = [1_000, 10_000] if args.quick else [1_000, 100_000]
    local = [_run_case("local", n) for n in local_ns]
    s3 = [_run_case("s3", n) for n in s3_ns]
    nightly = [_run_case("nightly", h) for h in histories]
    print(f"\nzero-cost scorer, batch {BATCH}, 64 px PNGs, {os.cpu_count()} CPUs\n")
    print("| store | N | images/s | seconds | list+manifest s | plan s | score s | commit s | reduce s "
          "| driver peak RSS MB | objects/image | staged parts | staging MB | requests/image |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in local + s3:
        ph = r["phases"]
        listing = ph.get("list", 0) + ph.get("manifest", 0)
        print(f"| {r['case']} | {r['n']} | {r['ips']} | {r['seconds']} | {listing:.2f} | "
              f"{ph.get('plan', 0):.2f} | {ph.get('score', 0):.2f} | {ph.get('commit', 0):.2f} | "
              f"{ph.get('reduce', 0):.2f} | {r['peak_rss_mb']} | {r['objects_per_image']} | {r['staged_parts']} | "
              f"{r['staging_mb']:.1f} | {r.get('requests_per_image', '')} |")
    print("\n| nightly: history rows | new images | plan s (ledger) | plan s (no ledger: rebuilt) | plan s (again) |")
    print("|---|---|---|---|---|")
    for r in nightly:
        print(f"| {r['history']} | {r['new']} | {r['with_ledger_s']} | {r['rebuild_ledger_s']} | "
              f"{r['with_ledger_again_s']} |")
    growth = local[-1]["peak_rss_mb"] - local[0]["peak_rss_mb"]
    ratio = nightly[-1]["with_ledger_s"] / max(nightly[0]["with_ledger_s"], 1e-9)
    print(f"\nnightly plan ratio (largest / smallest history): {ratio:.2f}")
    print(f"scale: local_ips={local[-1]['ips']:.1f} s3_ips={s3[-1]['ips']:.1f} rss_growth_mb={growth:.1f} "
          f"objects_per_image={local[-1]['objects_per_image']:.3f} nightly_plan_s={nightly[-1]['with_ledger_s']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
