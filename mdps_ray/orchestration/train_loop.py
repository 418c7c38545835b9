"""Distributed DDIM training on Ray Train: images streamed from Ray Data, DDP, checkpoints, resume.

Touch points with Ray (the loop itself is :class:`mdps_ray.method.training.PriorTrainer`):
1. the training images are a Ray Data dataset, decoded and resized in CPU tasks, split per worker;
2. ``prepare_model`` wraps the UNet in DDP (gloo on CPU, NCCL on GPU);
3. every K steps rank 0 writes a checkpoint (safetensors + JSON) and all ranks ``report``;
4. ``get_checkpoint`` restores the newest one after a worker failure or on a rerun;
5. ``ScalingConfig`` / ``RunConfig(storage_path)`` / ``FailureConfig(max_failures)``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import ray
import ray.train
import ray.train.torch
import torch
from ray.experimental import tqdm_ray

from mdps_ray.config.method import MdpsConfig
from mdps_ray.method.training import PriorTrainer
from mdps_ray.models.prior import build_unet
from mdps_ray.models.runtime import check_device, set_tf32
from mdps_ray.orchestration.faults import Faults, at_train_step
from mdps_ray.storage.train_state import load_state, newest_complete, save_state
from mdps_ray.storage.uris import filesystem, write_bytes


def newest_checkpoint(uri: str, storage_options: dict[str, Any]) -> ray.train.Checkpoint | None:
    """The complete checkpoint with the highest step under a run's storage folder, if any
    (:func:`~mdps_ray.storage.train_state.newest_complete`).

    Ray Train registers a reported checkpoint asynchronously, so after a worker dies (failover)
    or the job dies (rerun) its newest registered checkpoint can be older than the newest one on
    storage. Every worker looks at storage itself and continues from the newest there.
    """
    best = newest_complete(uri, storage_options)
    if best is None:
        return None
    fs, _ = filesystem(uri, storage_options)
    local = "://" not in uri or uri.startswith("file://")
    return ray.train.Checkpoint(path=best[1], filesystem=None if local else pafs.PyFileSystem(pafs.FSSpecHandler(fs)))


def _shard_images(size: int) -> tuple[torch.Tensor, list[int]]:
    """This worker's images (N, 3, H, W) uint8 and their global keys, materialised once."""
    shard = ray.train.get_dataset_shard("train")
    images: list[np.ndarray] = []
    keys: list[int] = []
    for batch in shard.iter_batches(batch_size=64, batch_format="numpy"):
        images.append(batch["pixels"])
        keys.extend(int(k) for k in batch["key"])
    if not images:
        raise ValueError("expected training images on every worker, got an empty shard; use fewer workers")
    return torch.from_numpy(np.concatenate(images)), keys


def _batch(images: torch.Tensor, keys: list[int], per_worker: int, seed: int, step: int, rank: int
           ) -> tuple[torch.Tensor, list[int]]:
    """The batch of step ``step``: a function of (seed, step, rank), so the data position resumes."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step * 101 + rank)
    n = images.shape[0]
    idx = torch.randperm(n, generator=g)[:per_worker] if per_worker <= n else torch.randint(0, n, (per_worker,),
                                                                                           generator=g)
    return images[idx].float() / 127.5 - 1.0, [keys[int(i)] for i in idx]


def cpu_threads(workers_here: int) -> int:
    """Torch threads of a CPU training worker: its node's CPUs shared by the workers on that node.

    Ray sets a worker's ``OMP_NUM_THREADS`` to the CPUs it reserved (1 by default, so that Ray Data's decode
    tasks keep a CPU), and torch then trains on one core while the others idle. The images are decoded and in
    memory before the first step (:func:`_shard_images`), so the reserved CPU no longer bounds the worker.
    """
    node = ray.get_runtime_context().get_node_id()
    cpus = next((n["Resources"].get("CPU", 1.0) for n in ray.nodes() if n["NodeID"] == node), 1.0)
    return max(1, int(cpus // max(1, workers_here)))


def _stop_flag(stop: bool, device: torch.device) -> bool:
    """Rank 0 decides; every rank follows (DDP must take the same number of steps everywhere)."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return stop
    flag = torch.tensor([1 if stop else 0], device=device)
    torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def train_func(config: dict[str, Any]) -> None:
    """The per-worker loop (Ray Train ``train_loop_per_worker``)."""
    method = MdpsConfig.model_validate(config["method"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    check_device(device)
    set_tf32(device, method.runtime.tf32)
    images, keys = _shard_images(method.read_size)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(ctx.get_local_world_size()))
    torch.manual_seed(method.train.seed)
    trainer = PriorTrainer(build_unet(method.prior).to(device), method.prior, method.train,
                           torch.Generator().manual_seed(method.train.seed))
    elapsed = 0.0
    checkpoint = newest_checkpoint(config["storage_uri"], config["storage_options"]) or ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            elapsed = load_state(trainer, Path(d))
    trainer.starts.append(trainer.step_count)
    trainer.unet = ray.train.torch.prepare_model(trainer.unet)
    per_worker = max(1, method.train.batch_size // world)
    start = time.monotonic() - elapsed
    since_report = 0
    bar = _progress(config, trainer.step_count) if rank == 0 else None
    while True:
        stop = trainer.step_count >= config["max_steps"] or (trainer.step_count > 0 and _out_of_time(config, start))
        if _stop_flag(stop, device):
            break
        x0, batch_keys = _batch(images, keys, per_worker, method.train.seed, trainer.step_count, rank)
        loss = trainer.step(x0.to(device), batch_keys)
        if bar is not None:
            bar.update(1)
            if trainer.step_count % 50 == 0:
                bar.set_description(f"train {config['run_name']} loss {loss:.4f}")
        at_train_step(Faults(**config["faults"]), trainer.step_count, rank, config["kill_marker"])
        since_report += 1
        if trainer.step_count % config["checkpoint_every"] == 0:
            _report(trainer, time.monotonic() - start, rank, since_report)
            since_report = 0
    if since_report or trainer.step_count == 0:
        _report(trainer, time.monotonic() - start, rank, since_report)
    if bar is not None:
        bar.close()


def _out_of_time(config: dict[str, Any], start: float) -> bool:
    """Training time (across resumes) past ``max_seconds``, or the wall clock past the command's ``deadline``."""
    budget, deadline = config["max_seconds"], config.get("deadline")
    over_budget = budget is not None and time.monotonic() - start > budget
    return over_budget or (deadline is not None and time.time() > deadline)


def _progress(config: dict[str, Any], done: int) -> tqdm_ray.tqdm:
    """Rank 0's bar, drawn by the driver (Ray's tqdm relays worker bars to the submitting process)."""
    bar = tqdm_ray.tqdm(total=config["max_steps"], desc=f"train {config['run_name']}", unit="step")
    bar.update(done)
    return bar


def _report(trainer: PriorTrainer, elapsed: float, rank: int, n_steps: int) -> None:
    window = trainer.losses[-max(n_steps, 1):] or [float("nan")]
    metrics = {"step": trainer.step_count, "loss": float(np.mean(window)), "elapsed": elapsed}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = None
        if rank == 0:
            save_state(trainer, Path(tmp), elapsed, {"threads_per_worker": torch.get_num_threads()})
            ckpt = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=ckpt)


def write_loss_files(losses: list[float], uri: str, storage_options: dict[str, Any]) -> None:
    """loss_curve.csv and loss_curve.png (per-step loss and a 50-step moving average)."""
    from mdps_ray.visualization.plots import line_plot

    lines = ["step,loss"] + [f"{i + 1},{v:.6g}" for i, v in enumerate(losses)]
    write_bytes(f"{uri}/loss_curve.csv", ("\n".join(lines) + "\n").encode(), storage_options)
    k = 50
    smooth = np.convolve(losses, np.ones(k) / k, mode="valid").tolist() if len(losses) >= k else losses
    write_bytes(f"{uri}/loss_curve.png", line_plot(smooth, "training loss (50-step mean)", "step", "loss"),
                storage_options)
