"""The training job: per category, check inputs, train on Ray Train, save the model, calibrate.

Output per category: ``<model>/`` (diffusers layout, EMA weights when enabled), ``calibration.json``,
``model_card.json``, ``loss_curve.csv`` and ``loss_curve.png``; the model is ``<out>/model`` for one
category and ``<out>/<category>/model`` for several.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import ray
import ray.train
import torch
from PIL import Image
from ray.experimental import tqdm_ray
from ray.train.torch import TorchTrainer
from safetensors.torch import load_file

from mdps_ray import __version__
from mdps_ray.api import build_scorer
from mdps_ray.config.jobs import TrainJobConfig
from mdps_ray.config.method import ConfigError, MdpsConfig
from mdps_ray.config.overrides import apply_overrides
from mdps_ray.config.presets import preset
from mdps_ray.data.decode import decode_for_training
from mdps_ray.data.native import resolve_read_size
from mdps_ray.data.records import ImageRecord, list_records
from mdps_ray.data.splits import split_holdout
from mdps_ray.method.calibration import Calibration, calibration_passes
from mdps_ray.models.prior import build_unet
from mdps_ray.orchestration.cluster import can_grow, init_ray
from mdps_ray.orchestration.faults import Faults
from mdps_ray.orchestration.progress import progress_bar
from mdps_ray.orchestration.score_plan import refuse_relative_in_submitted_job
from mdps_ray.orchestration.train_loop import train_func, write_loss_files
from mdps_ray.orchestration.train_positions import train_positions
from mdps_ray.storage.checkpoints import save_calibration, save_prior
from mdps_ray.storage.uris import filesystem, join, probe_writable, read_bytes, write_bytes
from mdps_ray.workflows import calibrate_local


class TrainInputError(ValueError):
    """Bad training input found before any training starts."""


@dataclass(frozen=True)
class TrainedModel:
    category: str
    model_uri: str
    steps: int
    final_loss: float
    seconds: float
    calibration: Calibration | None


def _check_images(records: list[ImageRecord], so: dict[str, Any], where: str) -> list[ImageRecord]:
    """Keep readable images; refuse when none is; warn (with a count) about mixed sizes."""
    sizes: Counter[tuple[int, int]] = Counter()
    ok, bad = [], 0
    for r in records:
        data = read_bytes(r.uri, so)  # a storage error is the store's, not an unreadable image: it propagates
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
                sizes[im.size] += 1
            ok.append(r)
        except Exception:
            bad += 1
    if not ok:
        raise TrainInputError(f"expected readable training images in {where}, got none of {len(records)}")
    if bad:
        warnings.warn(f"{bad} unreadable training images in {where} skipped", stacklevel=2)
    if len(sizes) > 1:
        common, _ = sizes.most_common(1)[0]
        others = sum(n for s, n in sizes.items() if s != common)
        warnings.warn(f"{others} training images in {where} differ from the common size {common[0]}x{common[1]}; "
                      "all are resized to the prior's size", stacklevel=2)
    return ok


def _check_writable(uri: str, so: dict[str, Any]) -> None:
    try:
        probe_writable(uri, so)
    except Exception as err:
        raise TrainInputError(f"expected a writable output location {uri}, got {type(err).__name__}: {err}") from None


def _records(job: TrainJobConfig, root: str) -> list[ImageRecord]:
    try:
        records = [r for r in list_records(root, job.layout, job.split, job.storage_options) if r.label in (0, None)]
    except FileNotFoundError as err:
        raise TrainInputError(str(err)) from None
    if not records:
        raise TrainInputError(f"expected normal training images under {root} (split {job.split!r}), found none")
    return _check_images(records, job.storage_options, root)


def _storage(job: TrainJobConfig) -> tuple[str, pafs.FileSystem | None]:
    """Ray Train storage: ``<out>/_train``; remote URIs go through the same fsspec options."""
    uri = join(job.out, "_train")
    if "://" not in uri or uri.startswith("file://"):
        return str(Path(uri.removeprefix("file://")).resolve()), None
    fs, path = filesystem(uri, job.storage_options)
    return path, pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def _trainer(job: TrainJobConfig, method: MdpsConfig, train: list[ImageRecord], run_name: str,
             deadline: float | None) -> TorchTrainer:
    table = pa.table({"uri": [r.uri for r in train], "key": list(range(len(train)))})
    step = max(1, -(-table.num_rows // max(2, 2 * job.num_workers)))
    ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)]).map_batches(
        functools.partial(decode_for_training, size=method.read_size, storage_options=job.storage_options),
        batch_size=16, num_cpus=0.25)
    cpus = float(ray.cluster_resources().get("CPU", 1))
    per_worker = 1.0 if job.use_gpu else max(0.1, min(1.0, (cpus - 1.0) / job.num_workers))
    storage_path, storage_fs = _storage(job)
    return TorchTrainer(
        train_func,
        train_loop_config={
            "method": method.model_dump(mode="json"), "max_steps": job.max_steps,
            "max_seconds": None if job.max_minutes is None else job.max_minutes * 60,
            "deadline": deadline,
            "checkpoint_every": job.checkpoint_every, "faults": Faults.from_env().as_dict(),
            "kill_marker": str(Path(tempfile.gettempdir()) / f"mdps-kill-{run_name}-{_short_hash(job.out)}"),
            "storage_uri": join(job.out, "_train", run_name) if storage_fs else str(Path(storage_path) / run_name),
            "storage_options": job.storage_options, "run_name": run_name,
        },
        scaling_config=ray.train.ScalingConfig(num_workers=job.num_workers, use_gpu=job.use_gpu,
                                               resources_per_worker={"CPU": round(per_worker, 2)}),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path, storage_filesystem=storage_fs,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=job.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=job.max_failures)),
        datasets={"train": ds},
    )


def check_train_resources(job: TrainJobConfig) -> None:
    """Ask for what the cluster can give before waiting on it: GPUs this machine's own Ray does not have are one
    line (it waited silently for ever); a cluster that can grow is told what it waits for."""
    if not job.use_gpu:
        return
    have = int(ray.cluster_resources().get("GPU", 0))
    if have >= job.num_workers:
        return
    if not can_grow():
        raise ConfigError(f"expected {job.num_workers} GPU(s) for use_gpu=true, got {have} on this machine's Ray; "
                          "train with use_gpu=false, or submit the job to a cluster with GPU nodes")
    budget = "" if job.max_minutes is None else f"; --max-minutes {job.max_minutes:g} counts the wait"
    print(f"mdps: waiting for {job.num_workers - have} more GPU(s) from the cluster's autoscaler{budget}",
          file=sys.stderr, flush=True)


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _final_unet(method: MdpsConfig, checkpoint_dir: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    unet = build_unet(method.prior)
    unet.load_state_dict(load_file(str(checkpoint_dir / "model.safetensors")))
    meta = json.loads((checkpoint_dir / "state.json").read_text())
    ema_file = checkpoint_dir / "ema.safetensors"
    if method.train.ema_decay and ema_file.exists():
        shadows = load_file(str(ema_file))
        with torch.no_grad():
            for i, p in enumerate(unet.parameters()):
                p.copy_(shadows[f"ema.{i}"])
    return unet.eval().requires_grad_(False), meta


def _calibrate(job: TrainJobConfig, method: MdpsConfig, unet: Any, holdout: list[ImageRecord],
               digest: str) -> Calibration:
    """Calibrate the trained prior (or per-position priors) where :attr:`TrainJobConfig.calibrate_where` says;
    returns the thresholds."""
    states = [u.state_dict() for u in unet] if isinstance(unet, list) else unet.state_dict()
    args = (method.model_dump(mode="json"), states, holdout, job.target_fpr, digest,
            job.storage_options)
    on_cluster = job.calibrate_where == "cluster" or (job.calibrate_where == "auto" and job.use_gpu)
    if not on_cluster:
        return calibrate_on(*args, use_gpu=False, bar=None)
    task = ray.remote(num_cpus=1, num_gpus=1 if job.use_gpu else 0)(calibrate_on)
    return ray.get(task.remote(*args, job.use_gpu, "ray"))


def calibrate_on(method_json: dict[str, Any], state: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]],
                 holdout: list[ImageRecord],
                 target_fpr: float, digest: str, so: dict[str, Any], use_gpu: bool, bar: str | None) -> Calibration:
    """Build the scorer on this process's device (cuda when ``use_gpu``) and fit the thresholds, with a
    progress bar on the terminal (``bar="ray"``: Ray's bar, relayed from a task). ``state`` is the prior's
    weights, or a list of the per-position priors' weights."""
    method = MdpsConfig.model_validate(method_json)
    nets = []
    for weights in state if isinstance(state, list) else [state]:
        net = build_unet(method.prior)
        net.load_state_dict(weights)
        nets.append(net.eval().requires_grad_(False))
    device = torch.device("cuda" if use_gpu else "cpu")
    scorer = build_scorer(nets if isinstance(state, list) else nets[0], method, device)
    total = calibration_passes(method.sampler.mask, method.maps.normalise, len(holdout))
    desc = f"calibrating on {len(holdout)} held-out images"
    progress: Any = tqdm_ray.tqdm(total=total, desc=desc, unit="pass") if bar == "ray" else \
        progress_bar(total, desc, "pass")
    try:
        return calibrate_local(scorer, holdout, 8, device, target_fpr=target_fpr, config_hash=method.digest(),
                               model_digest=digest, storage_options=so, on_images=progress.update)
    finally:
        progress.close()


def _train_shared(job: TrainJobConfig, method: MdpsConfig, train: list[ImageRecord], run_name: str,
                  deadline: float | None, category: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """One prior on Ray Train (data-parallel, checkpointed, resumable); its final UNet and state."""
    result = _trainer(job, method, train, run_name, deadline).fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training of {category} produced no checkpoint")
    with result.checkpoint.as_directory() as d:
        return _final_unet(method, Path(d))


def _train_per_position(job: TrainJobConfig, method: MdpsConfig, train: list[ImageRecord],
                        deadline: float | None) -> tuple[list[Any], dict[str, Any]]:
    """The per-position priors as parallel Ray tasks; a state shaped as :func:`_final_unet`'s."""
    trained = train_positions(job, method, train, deadline)
    meta = {"step": min(trained.steps), "elapsed": trained.seconds, "losses": trained.mean_losses(),
            "position_steps": trained.steps}
    return list(trained.unets), meta


def train_category(job: TrainJobConfig, method: MdpsConfig, root: str, category: str, model_uri: str
                   ) -> TrainedModel:
    so = job.storage_options
    start = time.monotonic()
    # --max-minutes counts from here (listing, checks, Ray start, training); calibration comes after it
    deadline = None if job.max_minutes is None else time.time() + job.max_minutes * 60
    records = _records(job, root)
    train, holdout = split_holdout(records, job.holdout_fraction)
    method = resolve_read_size(method, [r.uri for r in train], so)
    _check_writable(model_uri, so)
    run_name = job.run_name or "train-" + hashlib.sha256(f"{model_uri}|{method.digest()}".encode()).hexdigest()[:12]
    init_ray()
    check_train_resources(job)
    unet: Any  # the UNet, or the per-position UNets in tile order
    if method.tiling.prior == "per_position":
        unet, meta = _train_per_position(job, method, train, deadline)
    else:
        unet, meta = _train_shared(job, method, train, run_name, deadline, category)
    digest = save_prior(unet, method, model_uri, so)
    losses = [float(v) for v in meta["losses"]]
    write_loss_files(losses, model_uri, so)
    calibration = None
    if job.calibrate:
        calibration = _calibrate(job, method, unet, holdout, digest)
        save_calibration(calibration, model_uri, so)
    seconds = time.monotonic() - start
    card = {
        "category": category, "config": method.model_dump(mode="json"), "config_hash": method.digest(),
        "weights_digest": digest, "steps": meta["step"], "train_seconds": meta["elapsed"], "wall_seconds": seconds,
        "final_loss": float(np.mean(losses[-50:])) if losses else None, "n_train": len(train),
        "n_holdout": len(holdout), "ema_decay": method.train.ema_decay, "num_workers": job.num_workers,
        "data_manifest_sha256": hashlib.sha256("\n".join(sorted(r.uri for r in train)).encode()).hexdigest(),
        "versions": {"mdps_ray": __version__, "torch": torch.__version__, "ray": ray.__version__},
        "job": job.redacted(), "run_name": run_name, "starts": meta.get("starts", []),
        "last_grad_norm": (meta.get("grad_norms") or [None])[-1], "threads_per_worker": meta.get("threads_per_worker"),
        **({"position_steps": meta["position_steps"]} if "position_steps" in meta else {}),
    }
    write_bytes(join(model_uri, "model_card.json"), json.dumps(card, indent=2, sort_keys=True).encode(), so)
    return TrainedModel(category, model_uri, int(meta["step"]), card["final_loss"] or float("nan"), seconds,
                        calibration)


def run_train_job(job: TrainJobConfig) -> list[TrainedModel]:
    """Train every category of the job, one after another."""
    refuse_relative_in_submitted_job({"data": job.data, "out": job.out})
    method = apply_overrides(preset(job.preset), job.method, source="method")
    if not job.categories:
        return [train_category(job, method, job.data, job.data.rstrip("/").rsplit("/", 1)[-1], join(job.out, "model"))]
    return [train_category(job, method, join(job.data, c), c, join(job.out, c, "model")) for c in job.categories]
