"""Per-position priors on Ray: one task per tile position, all scheduled at once.

Each task reads the normal images at ``tiling.read_size``, keeps its tile and trains one prior
(method/positions.py) for ``max_steps`` steps or until the job's deadline. The T tasks ask for an
equal share of the cluster (CPU / T each, or GPU / T up to one GPU each), so they run side by side
and share the training budget; a task that dies is retried by Ray (``max_failures``). Data-parallel
workers (``num_workers``) do not apply: one position is one task.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import ray
import torch
from diffusers import UNet2DModel

from mdps_ray.config.jobs import TrainJobConfig
from mdps_ray.config.method import MdpsConfig
from mdps_ray.data.images import load_images
from mdps_ray.data.records import ImageRecord
from mdps_ray.method.positions import position_tiles, prior_count
from mdps_ray.method.training import fit_prior
from mdps_ray.models.prior import build_unet


@dataclass(frozen=True)
class PositionPriors:
    """The trained per-position priors, in tile order, and what their training did."""

    unets: list[UNet2DModel]
    steps: list[int]
    losses: list[list[float]]
    seconds: float

    def mean_losses(self) -> list[float]:
        """The loss curve averaged over positions, step by step (as long as the shortest run)."""
        n = min(len(curve) for curve in self.losses)
        return [sum(curve[i] for curve in self.losses) / len(self.losses) for i in range(n)]


def train_position(method_json: dict[str, Any], uris: list[str], k: int, max_steps: int,
                   deadline: float | None, storage_options: dict[str, Any], use_gpu: bool
                   ) -> tuple[dict[str, torch.Tensor], int, list[float]]:
    """Ray task: train the prior of tile position ``k``; returns its final weights (EMA when on), steps, losses."""
    method = MdpsConfig.model_validate(method_json)
    device = torch.device("cuda" if use_gpu else "cpu")
    chunks = [position_tiles(load_images(uris[i: i + 32], method.read_size, storage_options), method, k).clone()
              for i in range(0, len(uris), 32)]  # never more than 32 full-size images at once
    tiles = torch.cat(chunks).to(device)
    seconds = None if deadline is None else max(0.0, deadline - time.time())
    trainer = fit_prior(tiles, method.prior, method.train, max_steps, seconds)
    state = {name: t.detach().cpu() for name, t in trainer.final_unet().state_dict().items()}
    return state, trainer.step_count, trainer.losses


def train_positions(job: TrainJobConfig, method: MdpsConfig, train: list[ImageRecord],
                    deadline: float | None) -> PositionPriors:
    """Train the T per-position priors of ``method`` as T parallel Ray tasks."""
    count = prior_count(method)
    resources = ray.cluster_resources()
    if job.use_gpu:
        options: dict[str, Any] = {"num_cpus": 0, "num_gpus": min(1.0, float(resources.get("GPU", 1)) / count)}
    else:
        options = {"num_cpus": max(0.1, min(1.0, float(resources.get("CPU", 1)) / count))}
    task = ray.remote(max_retries=job.max_failures, **options)(train_position)
    started = time.monotonic()
    uris = [r.uri for r in train]
    method_json = method.model_dump(mode="json")
    refs = [task.remote(method_json, uris, k, job.max_steps, deadline, job.storage_options, job.use_gpu)
            for k in range(count)]
    unets, steps, losses = [], [], []
    for state, n, curve in ray.get(refs):
        unet = build_unet(method.prior)
        unet.load_state_dict(state)
        unets.append(unet.eval().requires_grad_(False))
        steps.append(n)
        losses.append(curve)
    return PositionPriors(unets, steps, losses, time.monotonic() - started)
