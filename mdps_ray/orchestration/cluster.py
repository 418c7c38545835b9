"""Joining a Ray cluster, or starting an embedded one, and sizing actor pools from it."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import ray
import ray.data

OBJECT_STORE_BYTES = 2 * 1024**3


def quiet_ray_data() -> None:
    """No per-operator progress logs: the jobs print their own one-line progress."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


_EMBEDDED: list[bool] = []  # set by init_ray: True when this process started its own Ray (no autoscaler)


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster of ``RAY_ADDRESS`` (a submitted job), else start an embedded one on loopback.

    ``ray.init`` replaces the process's SIGTERM handler with ``sys.exit(15)``; the caller's handler (the CLI's:
    one line and exit 143, like an interrupt) is put back after it."""
    quiet_ray_data()
    if ray.is_initialized():
        return
    on_term = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        _EMBEDDED[:] = [False]
    else:
        _EMBEDDED[:] = [True]
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # loopback only: see orchestration/__init__.py
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False)
    if callable(on_term):
        signal.signal(signal.SIGTERM, on_term)


@dataclass(frozen=True)
class PoolPlan:
    """How many scoring actors, on what device, with which resources each."""

    device: str
    num_actors: int
    num_gpus: float
    num_cpus: float
    threads: int
    decode_cpus: float


def plan_pool(device: str, num_actors: int | None, resources: Mapping[str, float]) -> PoolPlan:
    """One actor per GPU; on CPUs, actors with fractional CPUs so decode tasks still get scheduled.

    (On 2 cores, two actors with 1 CPU each deadlock: the read and decode tasks never get a CPU.
    Actors here share CPUs − 1, so one CPU always stays free for Ray Data's own tasks.)

    Decoding: GPU actors get it from 0.5-CPU tasks running beside them (it overlaps the GPU). CPU
    actors ask the decode step for the same CPUs as themselves, so Ray Data fuses it into the actor:
    there the separate decode processes would only take cores from the scorer and import torch again.

    ``resources`` is the cluster's view (``ray.cluster_resources()``); no Ray call is made here.
    """
    gpus, cpus = int(resources.get("GPU", 0)), float(resources.get("CPU", 1))
    use_gpu = device == "cuda" or (device == "auto" and gpus > 0)
    if use_gpu:
        if gpus == 0:
            raise ValueError("expected GPUs in the Ray cluster for device=cuda, got none (an embedded Ray has no "
                             "autoscaler to add them); use device=cpu, or submit to a cluster with GPU nodes")
        n = num_actors or gpus
        return PoolPlan("cuda", n, 1.0, 1.0, max(1, int(cpus // n) - 1), decode_cpus=0.5)
    n = num_actors or max(1, int(cpus // 2))
    per_actor = max(0.1, min(1.0, (cpus - 1.0) / n))
    return PoolPlan("cpu", n, 0.0, round(per_actor, 2), max(1, int(cpus // n)), decode_cpus=round(per_actor, 2))


def can_grow() -> bool:
    """Whether the cluster may add nodes: a joined cluster may have an autoscaler; an embedded Ray has none."""
    return not (_EMBEDDED and _EMBEDDED[0])


def wait_for_pool(device: str, num_actors: int | None, timeout_s: float,
                  resources: Callable[[], Mapping[str, float]], request: Callable[[int], None],
                  grow: bool, say: Callable[[str], None], clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> PoolPlan:
    """The pool, planned once the GPUs it asked for exist.

    ``device=cuda`` on a cluster that cannot grow (``grow`` False: the embedded Ray) fails at once
    without GPUs; on one that can, the GPUs are requested from the autoscaler (``request(n)``) and
    waited for up to ``timeout_s`` with a progress line, then refused in one line naming what is
    missing. ``device=auto`` on a growable cluster without GPUs scores on CPU, and says so.
    """
    view = resources()
    have = int(view.get("GPU", 0))
    if device == "cuda" and have < (num_actors or 1) and grow:
        wanted = num_actors or 1
        request(wanted)
        start = clock()
        while have < wanted:
            waited = clock() - start
            if waited > timeout_s:
                raise ValueError(f"expected {wanted} GPU(s) for device=cuda within {timeout_s:.0f} s, the cluster "
                                 f"has {have}; check the autoscaler's GPU node types and quotas, or raise "
                                 "gpu_wait_seconds")
            say(f"waiting for {wanted} GPU(s) for device=cuda: {have} in the cluster after {waited:.0f} s")
            sleep(min(10.0, max(0.5, timeout_s / 60)))
            view = resources()
            have = int(view.get("GPU", 0))
    if device == "auto" and have == 0 and grow:
        say("no GPU in the cluster now: scoring on CPU (device=auto); set device=cuda to wait for the GPU nodes "
            "of an autoscaling cluster")
    return plan_pool(device, num_actors, view)
