"""Fault injection for the test suite, outside every published contract.

Tests set ``MDPS_FAULTS`` to a JSON object before starting a run (in the driver's environment); the
driver reads it once and hands it to its actors and train workers through their constructor or
loop config, so the hooks need no job-config field, no schema entry and no ``--help`` line.

    MDPS_FAULTS='{"kill_actor_after_batches": 1}'      one scoring actor exits after its first batch, once
    MDPS_FAULTS='{"kill_driver_after_batches": 2}'     the driver is SIGKILLed after two staged batches
    MDPS_FAULTS='{"kill_worker_at_step": 3}'           one train worker exits at step 3, once
    MDPS_FAULTS='{"kill_driver_at": "committed"}'      the driver is SIGKILLed right after a phase of the
                                                       scoring run: manifest, committed (results/ written,
                                                       no _SUCCESS yet), reduced (metrics computed, not written)
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mdps_ray.storage.uris import exists, write_bytes

ENV = "MDPS_FAULTS"


@dataclass(frozen=True)
class Faults:
    """Where to fail; every field off by default. ``marker_uri`` makes a kill happen once."""

    kill_actor_after_batches: int | None = None
    kill_driver_after_batches: int | None = None
    kill_worker_at_step: int | None = None
    kill_driver_at: str | None = None
    marker_uri: str | None = None

    @classmethod
    def from_env(cls) -> Faults:
        raw = os.environ.get(ENV, "").strip()
        if not raw:
            return cls()
        data = json.loads(raw)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"expected {ENV} keys in {sorted(cls.__dataclass_fields__)}, got {sorted(unknown)}")
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def after_staged_batch(faults: Faults, batches: int, driver_pid: int | None, default_marker: str,
                       storage_options: dict[str, Any] | None) -> None:
    """Scoring actor hook, called after each staged batch: kill the driver, or this actor once."""
    if faults.kill_driver_after_batches is not None and batches >= faults.kill_driver_after_batches:
        if driver_pid:
            os.kill(driver_pid, signal.SIGKILL)
        os._exit(17)
    if faults.kill_actor_after_batches is None or batches < faults.kill_actor_after_batches:
        return
    marker = faults.marker_uri or default_marker
    if not exists(marker, storage_options):
        write_bytes(marker, b"killed", storage_options)
        os._exit(13)


def at_train_step(faults: Faults, step: int, rank: int, marker: str) -> None:
    """Train worker hook: rank 0 exits once at ``kill_worker_at_step`` (the marker file makes it once)."""
    at = faults.kill_worker_at_step
    if at is None or step != at or rank != 0 or os.path.exists(marker):
        return
    Path(marker).parent.mkdir(parents=True, exist_ok=True)
    Path(marker).write_text("killed")
    os._exit(13)


PHASES = ("manifest", "committed", "reduced")


def at_phase(faults: Faults, phase: str) -> None:
    """Driver hook after each phase of a scoring run: SIGKILL itself at ``kill_driver_at``."""
    if faults.kill_driver_at is not None and faults.kill_driver_at not in PHASES:
        raise ValueError(f"expected kill_driver_at in {PHASES}, got {faults.kill_driver_at!r}")
    if faults.kill_driver_at == phase:
        os.kill(os.getpid(), signal.SIGKILL)
