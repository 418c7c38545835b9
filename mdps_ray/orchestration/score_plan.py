"""The run policy of a scoring job, Ray-free: the run id, the manifest (listed once, or read back on
a resume), the nightly skip, what is still pending, whether a run may commit, and its score summary.

Everything here takes tables and storage URIs and is unit-tested without a cluster;
``score_pipeline.py`` calls it around the Ray Data graph.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from mdps_ray.config.jobs import ScoreJobConfig
from mdps_ray.config.method import ConfigError, MdpsConfig
from mdps_ray.config.overrides import apply_overrides
from mdps_ray.core.scores import score_summary
from mdps_ray.data.manifest import build_manifest
from mdps_ray.data.records import list_records
from mdps_ray.method.calibration import Calibration, stale_calibration
from mdps_ray.metrics.drift import acquisition_drift
from mdps_ray.orchestration.score_models import ModelSet, list_manifest_for
from mdps_ray.storage.checkpoints import read_model_meta, validate_model
from mdps_ray.storage.ledger import read_ledger, scored_keys
from mdps_ray.storage.results import ACQUISITION_COLUMNS, RESULTS_SCHEMA_VERSION, read_table, table_bytes
from mdps_ray.storage.runs import RunPaths
from mdps_ray.storage.uris import absolute, exists, write_bytes


class PhaseClock:
    """Wall seconds per phase of a run, kept in run.json (``phase_seconds``)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name] = round(now - self._last, 3)
        self._last = now


class RunFailed(RuntimeError):
    """The run finished but must not be committed (too many bad inputs, missing images)."""


@dataclass(frozen=True)
class RunSummary:
    run_dir: str
    n_images: int
    n_errors: int
    n_scored_now: int
    metrics: dict[str, Any]
    drifted: tuple[str, ...] = ()  # one line per category whose acquisition drifted (:func:`drift_lines`)


def method_config(job: ScoreJobConfig) -> tuple[MdpsConfig, str, Calibration | None]:
    """The model's config with the job's overrides, its digest and calibration; the whole model is loaded and
    checked here, in the driver, so a damaged one is one line before any actor starts."""
    read_model_meta(job.model, job.storage_options)  # a folder that is no model: the message naming mdps.json first
    loaded = validate_model(job.model, job.storage_options)  # config, digest and calibration, all checked
    stored = loaded.config
    cfg = apply_overrides(stored, job.method_patch(), source="method")
    if cfg.prior != stored.prior:  # here, before Ray starts; the actors' Detector.load refuses it too
        raise ConfigError("expected no prior.* overrides at scoring time: the prior is fixed by the model "
                          f"{job.model}; drop them, or train a prior with those settings")
    if cfg.tiling.enabled and cfg.tiling.read_size == "native":
        raise ConfigError(f"expected tiling.read_size in pixels to score {job.model}, got native: a model's native "
                          "side is fixed when its prior is trained; leave tiling.read_size unset to use it")
    calibration = loaded.calibration
    stale = stale_calibration(calibration, cfg, job.model)
    if stale:  # here, in the driver: the actors' copy of this warning does not reach the terminal
        warnings.warn(stale, UserWarning, stacklevel=2)
    return cfg, loaded.digest, calibration


def with_absolute_paths(job: ScoreJobConfig) -> ScoreJobConfig:
    """Local ``model``/``data``/``out`` made absolute, so every ``map_uri`` a row records opens from any
    directory (``mdps report``/``evaluate`` run elsewhere) and the run id does not depend on the cwd."""
    paths = {k: getattr(job, k) for k in ("model", "data", "out")}
    refuse_relative_in_submitted_job(paths)
    return job.model_copy(update={k: absolute(v) for k, v in paths.items()})


# Set by Ray's job supervisor in the environment of a `ray job submit` entrypoint (Ray 2.60).
SUBMITTED_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def refuse_relative_in_submitted_job(paths: dict[str, str]) -> None:
    """A submitted job runs in Ray's temporary copy of ``--working-dir``: a relative path there would
    write into (or read from) that throw-away folder and still "succeed", so it is refused in one line."""
    if not os.environ.get(SUBMITTED_JOB_ENV):
        return
    relative = {k: v for k, v in paths.items() if v and "://" not in v and not os.path.isabs(v)}
    if relative:
        key, value = next(iter(relative.items()))
        raise ValueError(f"expected an absolute path or a URI for --{key} in a submitted job, got {value!r}: the "
                         "job runs in Ray's temporary working directory; use s3://… or a shared absolute path")


def default_run_id(job: ScoreJobConfig, model_digest: str, config_hash: str, dt: str | None,
                   listing: str = "") -> str:
    """Deterministic: the same data, model, config (and nightly date) give the same run id.

    A plain run also keys on ``listing`` (:func:`listing_digest` of what the data holds now), so a
    rerun after images were added, changed or deleted is a new run instead of the old one returned.
    A nightly run does not: resubmitting the same night returns (or resumes) that night's run.
    """
    key = f"{job.data}|{job.split}|{model_digest}|{config_hash}|{dt or ''}|{listing}"
    prefix = f"nightly-{dt}" if job.incremental else "run"
    return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def list_manifest(job: ScoreJobConfig, models: ModelSet | None = None) -> pa.Table:
    """List the dataset once: every image with its content key (data/manifest.py); with a models root,
    every category's sub-folder (orchestration/score_models.py)."""
    if models is not None:
        return list_manifest_for(job, models)
    so = job.storage_options
    return build_manifest(list_records(job.data, job.layout, job.split, so), so)


def listing_digest(manifest: pa.Table) -> str:
    """A digest of (image id, content key) over a listing, order-free (sorted in Arrow, hashed in chunks)."""
    pairs = manifest.select(["image_id", "content_key"]).sort_by("image_id")
    h = hashlib.sha256()
    for k, batch in enumerate(pairs.to_batches(max_chunksize=65_536)):
        lines = pc.binary_join_element_wise(batch.column(0), batch.column(1), "\t")
        h.update(("\n" if k else "").encode() + "\n".join(lines.to_pylist()).encode())
    return h.hexdigest()[:16]


def run_paths(job: ScoreJobConfig, models: ModelSet, dt: str | None) -> tuple[RunPaths, pa.Table | None]:
    """The run's directory, and the listing when it had to be taken to name the run (to reuse it)."""
    if job.run_id:
        return RunPaths(job.out, job.run_id), None
    if job.incremental:
        return RunPaths(job.out, default_run_id(job, models.digest, models.cfg_hash, dt)), None
    listed = list_manifest(job, models)
    refuse_empty(job, listed)
    return RunPaths(job.out, default_run_id(job, models.digest, models.cfg_hash, dt, listing_digest(listed))), listed


def refuse_empty(job: ScoreJobConfig, listed: pa.Table) -> None:
    """No image at all is a mistake in a plain run (a wrong path, an empty manifest); a night with nothing
    new (``--incremental``) commits an empty run as usual."""
    if listed.num_rows == 0 and not job.incremental:
        split = f" (split {job.split})" if job.layout in ("auto", "mvtec") else ""
        raise ConfigError(f"expected images to score in {job.data}{split}, found none; check the path, the split or "
                          "the manifest's rows (an empty night is normal only with --incremental)")


def load_or_list_manifest(job: ScoreJobConfig, paths: RunPaths, models: ModelSet,
                          listed: pa.Table | None = None) -> pa.Table:
    """Read the run's manifest (resume) or take the listing (``listed``, or list now) and write it."""
    so = job.storage_options
    if exists(paths.manifest, so):
        return read_table(paths.manifest, so)
    table = listed if listed is not None else list_manifest(job, models)
    refuse_empty(job, table)
    if job.incremental:
        table = skip_scored_by(table, job.out, models, so)
    write_bytes(paths.manifest, table_bytes(table), so)
    return table


def skip_scored_by(table: pa.Table, out: str, models: ModelSet, so: dict[str, Any]) -> pa.Table:
    """:func:`skip_already_scored` with each category's own model and config (the ledger read once)."""
    if models.single:
        return skip_already_scored(table, out, models.digest, models.cfg_hash, so)
    ledger = read_ledger(out, so)
    keep = []
    for cat in pc.unique(table.column("category")).to_pylist():
        rows = table.filter(pc.equal(table.column("category"), cat))
        model = models.model_for(cat)
        if model is not None:
            done = scored_keys(out, model.digest, model.cfg_hash, so, ledger)
            rows = rows.filter(pc.invert(pc.is_in(rows.column("content_key"), value_set=done)))
        keep.append(rows)
    return pa.concat_tables(keep).sort_by("image_id") if keep else table


def skip_already_scored(table: pa.Table, out: str, digest: str, cfg_hash: str, so: dict[str, Any]) -> pa.Table:
    """The nightly skip: drop images whose (content key, model digest, config hash) a committed run
    under ``out`` already holds, joined in Arrow against the ledger (storage/ledger.py), so the plan's
    cost follows the ledger's few columns, not every committed run's results. ``content_key`` is the
    manifest's (data/manifest.py)."""
    done = scored_keys(out, digest, cfg_hash, so)
    return table.filter(pc.invert(pc.is_in(table.column("content_key"), value_set=done)))


def pending_rows(manifest: pa.Table, staged: pa.Table) -> pa.Table:
    """Manifest rows without a staged ``ok`` row yet (what a resume still has to score: error rows are
    retried, so a read that timed out in the crashed attempt is scored now)."""
    ok = staged.filter(pc.equal(staged.column("status"), "ok")).column("image_id").combine_chunks()
    return manifest.filter(pc.invert(pc.is_in(manifest.column("image_id"), value_set=ok)))


def run_identity(job: ScoreJobConfig, model_digest: str, config_hash: str, dt: str | None) -> dict[str, Any]:
    """What a run computes: a resume must match it (storage/claims.py)."""
    return {"model_digest": model_digest, "config_hash": config_hash, "data": job.data, "split": job.split,
            "layout": job.layout, "incremental": job.incremental, "dt": dt,
            "results_schema": RESULTS_SCHEMA_VERSION}


def check_complete(manifest: pa.Table, table: pa.Table, max_error_fraction: float, model_digest: str = "",
                   config_hash: str = "", models: ModelSet | None = None) -> None:
    """Refuse to commit a run with missing rows, too many error rows, or scored rows of another model or
    config (given ``model_digest``/``config_hash``, or each category's of ``models``)."""
    owners: dict[str | None, tuple[str, str]] = {None: (model_digest, config_hash)} if model_digest else {}
    if models is not None:
        owners = {c: (m.digest, m.cfg_hash) for c, m in models.by_category.items()}
    ok = table.filter(pc.equal(table.column("status"), "ok"))
    for cat, (digest, cfg_hash) in owners.items():
        rows = ok if cat is None else ok.filter(pc.equal(ok.column("category"), cat))
        foreign = rows.filter(pc.or_(pc.not_equal(rows.column("model_digest"), digest),
                                     pc.not_equal(rows.column("config_hash"), cfg_hash)))
        if foreign.num_rows:
            raise RunFailed(f"expected every staged row from model {digest} with config {cfg_hash}, got "
                            f"{foreign.num_rows} from another; nothing was committed (rerun with --restart)")
    expected = manifest.num_rows
    missing = int(pc.sum(pc.invert(pc.is_in(manifest.column("image_id"),
                                            value_set=table.column("image_id").combine_chunks()))).as_py() or 0)
    if missing:
        raise RunFailed(f"expected a row for each of {expected} inputs, {missing} are missing")
    n_err = int(pc.sum(pc.equal(table.column("status"), "error")).as_py() or 0)
    if expected and n_err / expected > max_error_fraction:
        bad = table.filter(pc.equal(table.column("status"), "error")).slice(0, 1).to_pylist()[0]
        raise RunFailed(f"{n_err} of {expected} inputs could not be scored "
                        f"({n_err / expected:.1%} > max_error_fraction {max_error_fraction:.1%}), e.g. "
                        f"{bad['image_id']}: {bad['error']}; nothing was committed (the error rows are staged "
                        "under the run's _staging/; fix the inputs or raise max_error_fraction and rerun)")


def score_stats(table: pa.Table) -> dict[str, float]:
    """The one score summary (core.scores.score_summary) of the run's scored rows."""
    scores = table.filter(pc.equal(table.column("status"), "ok")).column("score").to_numpy(zero_copy_only=False)
    return score_summary(torch.tensor(np.asarray(scores, dtype=np.float64)))


def drift(table: pa.Table, stats: dict[str, float], cal: Calibration | None) -> dict[str, float] | None:
    """Today's score distribution (``stats``, :func:`score_stats` of ``table``) against the calibration's
    normal scores (a shift in normal units)."""
    if cal is None or stats["n"] == 0 or not cal.score_stats:
        return None
    ref = cal.score_stats
    std = ref.get("std") or 1e-12
    flagged = [v for v in table.column("is_anomalous").to_pylist() if v is not None]
    return {"mean_shift_in_std": (stats["mean"] - ref["mean"]) / std, "median_today": stats["q50"],
            "median_calibration": ref.get("q50", float("nan")),
            "fraction_above_threshold": float(np.mean(flagged)) if flagged else float("nan")}


def night_summary(table: pa.Table, models: ModelSet) -> dict[str, dict[str, Any]]:
    """Per category of a run's rows: images, flags, score summary and the drift of its acquisition statistics
    against its model's calibration normals (``metrics/drift.py``): what ``mdps trend`` reads from ``run.json``
    instead of every row of every night."""
    ok = table.filter(pc.equal(table.column("status"), "ok"))
    out = {}
    for cat in sorted(pc.unique(table.column("category")).to_pylist()):
        rows = ok.filter(pc.equal(ok.column("category"), cat))
        model = models.model_for(cat)
        cal = None if model is None else model.calibration
        flags = pc.drop_null(rows.column("is_anomalous"))
        today = {c.removeprefix("input_"): pc.drop_null(rows.column(c)).to_numpy() for c in ACQUISITION_COLUMNS}
        p_values = pc.drop_null(rows.column("p_value")).to_numpy()
        scores = rows.column("score").to_numpy(zero_copy_only=False)
        drift = acquisition_drift(today, {} if cal is None else cal.normal_acquisition, p_values)
        out[cat] = {"images": rows.num_rows,
                    "errors": int(pc.sum(pc.equal(table.column("category"), cat)).as_py() or 0) - rows.num_rows,
                    "flagged": int(pc.sum(flags).as_py() or 0) if len(flags) else None,
                    "score_stats": score_summary(torch.tensor(np.asarray(scores, dtype=np.float64))),
                    "reference": "calibration" if cal is not None and cal.normal_acquisition else None,
                    "drift": drift}
    return out


def drift_lines(record: dict[str, Any]) -> tuple[str, ...]:
    """One line per category of a committed run whose acquisition drifted from its calibration normals."""
    night = record.get("night") or {}
    return tuple(f"category {cat}: {'; '.join(one['drift']['reasons'])}" for cat, one in sorted(night.items())
                 if (one.get("drift") or {}).get("drifted"))


def per_category_counts(table: pa.Table, models: ModelSet) -> dict[str, dict[str, Any]]:
    """Rows, errors and the scoring prior of each category of a run (run.json of a models-root run)."""
    out = {}
    for cat in sorted(pc.unique(table.column("category")).to_pylist()):
        rows = table.filter(pc.equal(table.column("category"), cat))
        model = models.model_for(cat)
        out[cat] = {"rows": rows.num_rows,
                    "errors": int(pc.sum(pc.equal(rows.column("status"), "error")).as_py() or 0),
                    "model": None if model is None else model.uri}
    return out
