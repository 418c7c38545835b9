"""The scoring job on Ray Data: manifest → decode (CPU tasks) → score (actor pool) → staged parts
→ commit → reduce (Ray tasks) → metrics.json, run.json, _SUCCESS.

Resumable and exactly once: every image lands in a staged part named by its batch's image ids;
a rerun with the same run id skips staged images; the commit compacts parts, keeps one row per
image and writes the marker last.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
import time
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray
import torch

from mdps_ray import __version__
from mdps_ray.config.jobs import ScoreJobConfig
from mdps_ray.config.method import MdpsConfig
from mdps_ray.core.masking import transductive_threshold
from mdps_ray.data.decode import decode_batch
from mdps_ray.data.manifest import refresh_versions
from mdps_ray.method.batching import default_batch
from mdps_ray.metrics.reduce import REDUCE_COLUMNS, reduce_table, shard_states
from mdps_ray.orchestration.cluster import PoolPlan, can_grow, init_ray, wait_for_pool
from mdps_ray.orchestration.faults import Faults, at_phase
from mdps_ray.orchestration.progress import progress_bar
from mdps_ray.orchestration.score_models import CategoryModel, ModelSet, load_models, unmodelled, unmodelled_rows
from mdps_ray.orchestration.score_plan import (
    PhaseClock,
    RunSummary,
    check_complete,
    drift,
    drift_lines,
    load_or_list_manifest,
    method_config,
    night_summary,
    pending_rows,
    per_category_counts,
    run_identity,
    run_paths,
    score_stats,
    with_absolute_paths,
)
from mdps_ray.orchestration.score_worker import ScoringWorker, StageOneRange
from mdps_ray.storage.claims import check_committed, check_identity, leased, sweep_leftovers
from mdps_ray.storage.ledger import write_entry
from mdps_ray.storage.results import part_name, table_bytes
from mdps_ray.storage.runs import RunPaths, commit, finalize, staged_rows
from mdps_ray.storage.uris import (
    check_folder_uri,
    exists,
    join,
    list_files,
    read_json,
    remove,
    write_bytes,
    write_json,
)
from mdps_ray.workflows import stored_loaders


def run_score_job(job: ScoreJobConfig, *, scorer_double: bool = False) -> RunSummary:
    """Score ``job.data`` into ``<out>/<run_id>/`` on the current Ray cluster; returns the summary.

    A committed run with the same identity is returned as it is; otherwise the run is written under
    its lease (one writer per run id) and resumes what an attempt with the same identity staged.
    ``job.model`` is one model directory or a models root (orchestration/score_models.py).
    ``scorer_double`` puts the zero-cost scorer double (mdps_ray/testing) in the actors, for the scale
    benchmark and tests only; its run.json says so.
    """
    start = time.monotonic()
    job = with_absolute_paths(job)
    so = job.storage_options
    check_folder_uri(job.out, "--out (the output prefix)", so)
    models = load_models(job, method_config)
    dt = (job.date or datetime.now(UTC).strftime("%Y-%m-%d")) if job.incremental else job.date
    listing_started = time.monotonic()
    paths, listed = run_paths(job, models, dt)  # a plain run lists the data here: its id names the listing
    list_seconds = time.monotonic() - listing_started
    identity = run_identity(job, models.digest, models.cfg_hash, dt)
    committed = _committed(paths, identity, so)
    if committed is not None:
        return committed
    with leased(paths, so, job.lease_seconds):
        committed = _committed(paths, identity, so)  # a writer that held the lease just before may have committed
        if committed is not None:
            return committed
        check_identity(paths, identity, so, job.restart)
        sweep_leftovers(paths, so, job.lease_seconds)  # temporary files of a killed attempt's writes
        return _run(job, models, paths, listed, dt, start, scorer_double, list_seconds)


def _refresh_retried(manifest: pa.Table, staged: pa.Table, paths: RunPaths, so: dict[str, Any]) -> pa.Table:
    """Inputs staged as error rows by an earlier attempt are retried now: their versions and content keys are
    looked up again (an input fixed since is keyed by its new content), and the manifest is rewritten."""
    failed = staged.filter(pc.equal(staged.column("status"), "error")).column("image_id").to_pylist()
    ok = set(staged.filter(pc.equal(staged.column("status"), "ok")).column("image_id").to_pylist())
    retried = set(failed) - ok
    if not retried:
        return manifest
    refreshed = refresh_versions(manifest, retried, so)
    write_bytes(paths.manifest, table_bytes(refreshed), so)
    return refreshed


def _committed(paths: RunPaths, identity: dict[str, Any], so: dict[str, Any]) -> RunSummary | None:
    if not exists(paths.success, so):
        return None
    record = read_json(paths.run_json, so)
    check_committed(record, identity, paths.run_id)
    remove(paths.staging, so)  # left by a writer stopped between _SUCCESS and its clean-up
    sweep_leftovers(paths, so)  # and its lease and temporary files
    return RunSummary(paths.root, record["counts"]["rows"], record["counts"]["errors"], 0,
                      read_json(paths.metrics, so), drift_lines(record))


def _run(job: ScoreJobConfig, models: ModelSet, paths: RunPaths, listed: pa.Table | None, dt: str | None,
         start: float, scorer_double: bool, list_seconds: float) -> RunSummary:
    so = job.storage_options
    clock, faults = PhaseClock(), Faults.from_env()
    clock.laps["list"] = round(list_seconds, 3)
    init_ray()
    plan = wait_for_pool(job.device, job.num_actors, job.gpu_wait_seconds, ray.cluster_resources, _request_gpus,
                         can_grow(), _say)
    clock.lap("pool")
    if job.batch_size is None:  # the device's default (method/batching.py), now that the device is known
        job = job.model_copy(update={"batch_size": default_batch(models.first.cfg, plan.device)})
    planned, models = models, models.on_device(plan.device)  # rows and the nightly skip carry the device kind
    manifest = load_or_list_manifest(job, paths, models, listed)
    clock.lap("manifest")
    at_phase(faults, "manifest")
    staged = staged_rows(paths, so, columns=["image_id", "status"])
    _stage_unmodelled(manifest, staged, models, paths, dt, so)
    manifest = _refresh_retried(manifest, staged, paths, so)
    pending = pending_rows(manifest, staged)
    clock.lap("plan")
    threshold, scored = None, 0
    for category, model in _work(models, pending):
        sub = job.model_copy(update={"model": model.uri})
        if model.cfg.sampler.mask.mode == "transductive":
            threshold = _transductive_threshold(sub, model.cfg, manifest, plan, paths)
            clock.lap("transductive_pass")
        rows = pending if category is None else pending.filter(pc.equal(pending.column("category"), category))
        scored += _score(sub, model.cfg, rows, plan, paths, dt, threshold, scorer_double) if rows.num_rows else 0
    clock.lap("score")
    table = staged_rows(paths, so)
    check_complete(manifest, table, job.max_error_fraction, models=models)
    commit(paths, table, so)
    write_entry(paths, table, so)
    clock.lap("commit")
    at_phase(faults, "committed")
    metrics = _reduce(table, models.first.cfg, so, job.reduce_shard_rows)
    clock.lap("reduce")
    at_phase(faults, "reduced")
    n_err = int(pc.sum(pc.equal(table.column("status"), "error")).as_py() or 0)
    record = _run_record(job, planned, plan, table, n_err, scored, time.monotonic() - start, dt)
    record["execution"] = execution_record(plan, models)
    if scorer_double:
        record["scorer"] = "zero-cost scorer double (mdps_ray/testing): not a model's scores"
    finalize(paths, metrics, {**record, "phase_seconds": clock.laps}, so)
    return RunSummary(paths.root, table.num_rows, n_err, scored, metrics, drift_lines(record))


def execution_record(plan: PoolPlan, models: ModelSet) -> dict[str, Any]:
    """Where and how the rows were computed: device kind, precision, TF32, and the config hash the rows and
    the ledger carry for it (what ``--incremental`` matches on)."""
    runtime = models.first.cfg.runtime
    return {"device": plan.device, "precision": runtime.precision, "tf32": runtime.tf32,
            "rows_config_hash": models.cfg_hash}


def _work(models: ModelSet, pending: pa.Table) -> list[tuple[str | None, CategoryModel]]:
    """(category, model) to score, one after another on the same cluster: each actor pool pins one prior."""
    if models.single:
        return [(None, models.first)]
    present = set(pc.unique(pending.column("category")).to_pylist())
    return [(c, models.by_category[c]) for c in models.categories if c in present]


def _stage_unmodelled(manifest: pa.Table, staged: pa.Table, models: ModelSet, paths: RunPaths, dt: str | None,
                      so: dict[str, Any]) -> None:
    """One staged part of error rows for the images whose category has no model (once per run)."""
    missing = unmodelled(manifest, models)
    missing = missing.filter(pc.invert(pc.is_in(missing.column("image_id"),
                                                value_set=staged.column("image_id").combine_chunks())))
    if missing.num_rows:
        part = part_name(missing.column("image_id").to_pylist())
        write_bytes(join(paths.staging, part), table_bytes(unmodelled_rows(missing, models, paths.run_id, dt)), so)


def _request_gpus(n: int) -> None:
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[{"GPU": 1}] * n)


def _say(line: str) -> None:
    print(f"mdps: {line}", file=sys.stderr, flush=True)


def _pipeline(job: ScoreJobConfig, cfg: MdpsConfig, table: pa.Table, plan: PoolPlan) -> ray.data.Dataset:
    # Pre-sliced blocks: a repartition would schedule 1-CPU tasks that small clusters cannot fit.
    blocks = max(1, min(table.num_rows, 4 * plan.num_actors, -(-table.num_rows // job.batch_size)))
    step = -(-table.num_rows // blocks)
    ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)])
    decode = functools.partial(decode_batch, size=cfg.read_size, max_pixels=job.max_pixels,
                               storage_options=job.storage_options)
    return ds.map_batches(decode, batch_size=job.batch_size, num_cpus=plan.decode_cpus)


def _actor_args(plan: PoolPlan) -> dict[str, Any]:
    """A fixed pool; Ray Data restarts a lost actor and retries its batches (max_restarts = −1 by default)."""
    return {"compute": ray.data.ActorPoolStrategy(size=plan.num_actors), "num_gpus": plan.num_gpus or None,
            "num_cpus": plan.num_cpus}


def _score(job: ScoreJobConfig, cfg: MdpsConfig, pending: pa.Table, plan: PoolPlan, paths: RunPaths,
           dt: str | None, threshold: float | None, scorer_double: bool, sync_writes: bool | None = None) -> int:
    """Score ``pending`` on an actor pool, then :func:`_settle` the uploads the actors still had in flight."""
    if sync_writes is None:
        sync_writes = not (job.async_uploads if job.async_uploads is not None else plan.num_gpus > 0)
    ds = _pipeline(job, cfg, pending, plan).map_batches(
        ScoringWorker, batch_size=job.batch_size, **_actor_args(plan),
        fn_constructor_kwargs={"job": job.model_dump(mode="json"), "run_id": paths.run_id, "dt": dt,
                               "device": plan.device, "mask_threshold": threshold, "num_threads": plan.threads,
                               "driver_pid": os.getpid(), "faults": Faults.from_env().as_dict(),
                               "scorer_double": scorer_double, "sync_writes": sync_writes})
    done, parts = 0, set()
    with progress_bar(pending.num_rows, f"scoring {paths.run_id}", "img") as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            bar.update(len(batch["image_id"]))
            done += len(batch["image_id"])
            parts.update(batch["part"].tolist())
    if not sync_writes and not _settle(paths, parts, job.storage_options):
        staged = staged_rows(paths, job.storage_options, columns=["image_id", "status"])
        lost = pending.filter(pc.invert(pc.is_in(pending.column("image_id"),
                                                 value_set=staged.column("image_id").combine_chunks())))
        if lost.num_rows:
            _say(f"{lost.num_rows} image(s) of batches whose upload did not finish are scored again")
            _score(job, cfg, lost, plan, paths, dt, threshold, scorer_double, sync_writes=True)
    return done


# How long the driver waits for the uploads that scoring actors flush as they shut down.
SETTLE_SECONDS = 30.0


def _settle(paths: RunPaths, parts: set[str], so: dict[str, Any]) -> bool:
    """Wait until every part the actors returned is staged (names only: one listing a poll); False when
    some never came within :data:`SETTLE_SECONDS` (an actor died with its upload in flight)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        staged = {u.rsplit("/", 1)[-1] for u in list_files(paths.staging, ".parquet", so)}
        if parts <= staged:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def _transductive_threshold(job: ScoreJobConfig, cfg: MdpsConfig, manifest: pa.Table, plan: PoolPlan,
                            paths: RunPaths) -> float:
    """Pass 1 over the whole set: min/max of stage-1 maps (global reduce), stored for resumes."""
    uri = join(paths.staging, "transductive_threshold.json")
    if exists(uri, job.storage_options):
        return float(read_json(uri, job.storage_options)["threshold"])
    ds = _pipeline(job, cfg, manifest, plan).map_batches(
        StageOneRange, batch_size=job.batch_size, **_actor_args(plan),
        fn_constructor_kwargs={"job": job.model_dump(mode="json"), "device": plan.device,
                               "num_threads": plan.threads})
    lo, hi = float("inf"), float("-inf")
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        if len(batch["lo"]):
            lo, hi = min(lo, float(batch["lo"].min())), max(hi, float(batch["hi"].max()))
    threshold = transductive_threshold(lo, hi, cfg.sampler.mask.fraction)
    write_json(uri, {"lo": lo, "hi": hi, "threshold": threshold}, job.storage_options)
    return threshold


@ray.remote(num_cpus=0.25)
def _shard_task(*args: Any) -> Any:
    return shard_states(*args)


def _reduce(table: pa.Table, cfg: MdpsConfig, so: dict[str, Any], shard_rows: int) -> dict[str, Any]:
    """Metrics from mergeable shard states: Ray tasks over Arrow shards of ``reduce_shard_rows`` rows; a run
    that fits one shard is reduced here, which saves starting task workers for a second of work."""
    ok = table.filter(pc.equal(table.column("status"), "ok")).select(REDUCE_COLUMNS)

    def mapper(args: Any) -> Any:
        args = list(args)
        if len(args) == 1:
            return [shard_states(*args[0])]
        return ray.get([_shard_task.remote(*a) for a in args])

    return reduce_table(ok, cfg.read_size, cfg.maps.crop, stored_loaders(so), shard_rows, mapper)


def _run_record(job: ScoreJobConfig, models: ModelSet, plan: PoolPlan, table: pa.Table, n_err: int, scored: int,
                seconds: float, dt: str | None) -> dict[str, Any]:
    stats = score_stats(table)
    backbones = sorted({v for v in pc.unique(table.column("backbone_digest")).to_pylist() if v})
    one = models.first
    cal = one.calibration if models.single else None
    record = {
        "mdps_ray_version": __version__, "torch": torch.__version__, "ray": ray.__version__,
        "python": platform.python_version(), "job": job.redacted(), "method": one.cfg.model_dump(mode="json"),
        "model_digest": models.digest, "config_hash": models.cfg_hash,
        "backbone_digest": backbones[0] if backbones else None, "calibration": None if cal is None else cal.to_json(),
        "pool": plan.__dict__, "counts": {"rows": table.num_rows, "errors": n_err, "scored_this_attempt": scored},
        "seconds": seconds, "dt": dt, "finished_at": datetime.now(UTC).isoformat(),
        "score_stats": stats, "drift": drift(table, stats, cal), "night": night_summary(table, models),
    }
    if not models.single:
        record["models"] = models.describe()
        record["per_category"] = per_category_counts(table, models)
    return record
