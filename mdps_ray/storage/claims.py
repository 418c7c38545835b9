"""A run's claims on its directory: what it computes (its identity) and who writes it now (its lease).

    <out>/<run_id>/_staging/identity.json   model digest, config hash, data, split, schema version
    <out>/<run_id>/_LOCK                    owner (host, pid, token), started, heartbeat

Identity: the first attempt of a run records it; a resume with another model or config is refused
in one line (the staged rows came from the first), unless it asks to restart. Lease: one writer per
run id. It is taken with a create-if-absent write — ``O_CREAT | O_EXCL`` on filesystems, a PUT with
``If-None-Match: *`` on S3 (refused with 412 when the object exists) — and renewed by a heartbeat
thread; a lease whose heartbeat is older than its time-to-live, or whose owner process on this host
is gone, belongs to a writer that stopped and is taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from mdps_ray.storage.runs import RunPaths
from mdps_ray.storage.uris import exists, filesystem, fresh, join, read_json, remove_children, write_json

LOCK_NAME = "_LOCK"


class RunClaimError(ValueError):
    """The run directory belongs to another computation or another live writer (a one-line user error)."""


def check_identity(paths: RunPaths, identity: dict[str, Any], storage_options: dict[str, Any] | None,
                   restart: bool = False) -> None:
    """Record ``identity`` for a new run, or refuse a resume whose identity differs.

    ``restart`` discards everything an earlier attempt left under the run (staged parts, the manifest, and what
    a kill past the commit left: results/, errors/, maps, metrics.json, run.json), all but the lease this
    writer holds, and starts the run again: nothing of the discarded attempt survives into the new one.
    """
    so = storage_options
    uri = join(paths.staging, "identity.json")
    if restart:
        remove_children(paths.root, {LOCK_NAME}, so)
    elif exists(uri, so):
        recorded = read_json(uri, so)
        differ = {k: (recorded.get(k), v) for k, v in identity.items() if recorded.get(k) != v}
        if differ:
            key, (was, now) = next(iter(differ.items()))
            raise RunClaimError(f"run {paths.run_id} was started with {key} {was}, this command has {now}: its staged "
                                "rows come from the first; use a new --run-id, or --restart to discard them")
        return
    elif exists(paths.manifest, so):  # staged by a version that kept no identity: refuse to guess
        raise RunClaimError(f"run {paths.run_id} has a manifest but no recorded identity; use a new --run-id, or "
                            "--restart to discard what was staged")
    write_json(uri, identity, so)


def check_committed(record: dict[str, Any], identity: dict[str, Any], run_id: str) -> None:
    """A committed run answers a rerun only when it was computed with the same model and config."""
    for key in ("model_digest", "config_hash"):
        if record.get(key) != identity[key]:
            raise RunClaimError(f"run {run_id} is committed with {key} {record.get(key)}, this command has "
                                f"{identity[key]}; use a new --run-id (committed runs are never rewritten)")


@dataclass
class Lease:
    """The lease file's URI, its owner record and the heartbeat that renews it."""

    uri: str
    owner: dict[str, Any]
    storage_options: dict[str, Any] | None
    ttl: float
    _stop: threading.Event
    _thread: threading.Thread | None = None

    def start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.ttl / 3):
                with contextlib.suppress(Exception):  # a missed beat is retried; ttl covers two of them
                    write_json(self.uri, {**self.owner, "heartbeat": time.time()}, self.storage_options)

        self._thread = threading.Thread(target=beat, name="mdps-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        _HELD.discard(self.owner["token"])
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            if read_json(self.uri, self.storage_options).get("token") == self.owner["token"]:
                fs, path = filesystem(self.uri, self.storage_options)
                fs.rm_file(path)
                if isinstance(fs, LocalFileSystem) and not os.listdir(os.path.dirname(path)):
                    os.rmdir(os.path.dirname(path))  # a run that failed before writing anything leaves no folder


def _create_exclusive(uri: str, data: bytes, so: dict[str, Any] | None) -> bool:
    """Write ``uri`` only if it does not exist; False when it does (or another writer won the race)."""
    fs, path = fresh(uri, so)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    if getattr(fs, "protocol", None) and "s3" in fs.protocol:
        bucket, key = path.split("/", 1)
        try:
            fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except FileExistsError:  # s3fs's translation of 412 PreconditionFailed
            return False
        except Exception as err:  # 412 PreconditionFailed (exists), 409 ConditionalRequestConflict (a race)
            if any(code in str(err) for code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")):
                return False
            raise
        return True
    if fs.exists(path):  # other stores: best effort (no atomic create-if-absent)
        return False
    fs.pipe_file(path, data)
    return True


_HELD: set[str] = set()  # tokens of the leases this process holds now


def _alive(owner: dict[str, Any]) -> bool:
    """False when the owner ran on this host and its process is gone (a killed run resumes at once), or
    is this process and no longer holds it (a release that failed during a storage outage)."""
    if owner.get("host") != socket.gethostname():
        return True  # another machine: only its heartbeat can tell
    if owner.get("pid") == os.getpid():
        return owner.get("token") in _HELD
    try:
        os.kill(int(owner.get("pid", 0)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def _owner() -> dict[str, Any]:
    now = time.time()
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "started": now,
            "heartbeat": now}


def acquire(paths: RunPaths, storage_options: dict[str, Any] | None, ttl: float = 120.0) -> Lease:
    """Take the run's lease, taking over one whose heartbeat is older than ``ttl`` s; refuse a live one."""
    uri = join(paths.root, LOCK_NAME)
    owner = _owner()
    for _ in range(2):
        if _create_exclusive(uri, json.dumps(owner).encode(), storage_options):
            lease = Lease(uri, owner, storage_options, ttl, threading.Event())
            _HELD.add(owner["token"])
            lease.start_heartbeat()
            return lease
        try:
            held = read_json(uri, storage_options)
        except FileNotFoundError:
            continue  # released between our attempt and the read: try again
        age = time.time() - float(held.get("heartbeat", 0))
        if age <= ttl and _alive(held):
            raise RunClaimError(f"run {paths.run_id} is being written by {held.get('host')} pid {held.get('pid')} "
                                f"(heartbeat {age:.0f} s ago); wait for it to finish (a writer that died is taken "
                                f"over {ttl - age:.0f} s from now), or use another --run-id")
        fs, path = filesystem(uri, storage_options)
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(path)  # a stale lease: its writer stopped beating more than ttl ago
    raise RunClaimError(f"run {paths.run_id}: another writer took the lease while this one took over a stale one")


def sweep_leftovers(paths: RunPaths, storage_options: dict[str, Any] | None, ttl: float = 120.0) -> list[str]:
    """Remove what a killed writer left: its lease when the writer is dead (on this host) or silent past ``ttl``,
    and, on local disk, the ``*.tmp-<hex>`` files of writes it did not finish. Returns what was removed."""
    removed = []
    uri = join(paths.root, LOCK_NAME)
    with contextlib.suppress(FileNotFoundError, ValueError):
        held = read_json(uri, storage_options)
        if not (time.time() - float(held.get("heartbeat", 0)) <= ttl and _alive(held)):
            fs, path = filesystem(uri, storage_options)
            fs.rm_file(path)
            removed.append(LOCK_NAME)
    fs, root = fresh(paths.root, storage_options)
    if isinstance(fs, LocalFileSystem) and fs.isdir(root):
        for found in fs.find(root):
            if _TEMPORARY.search(found):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(found)
                removed.append(found.removeprefix(root).lstrip("/"))
    return removed


_TEMPORARY = re.compile(r"\.tmp-[0-9a-f]{12}$")  # storage/uris.write_bytes's temporary names


@contextlib.contextmanager
def leased(paths: RunPaths, storage_options: dict[str, Any] | None, ttl: float = 120.0) -> Iterator[Lease]:
    lease = acquire(paths, storage_options, ttl)
    try:
        yield lease
    finally:
        lease.release()
