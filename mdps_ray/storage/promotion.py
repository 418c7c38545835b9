"""Promoting a model: the nightly job's ``--model`` switches to a candidate in one step, with a rollback.

A promoted model URI is a folder of versions and a pointer::

    <model>/_CURRENT.json            {"current": "versions/<name>", "previous": ..., "history": [...]}
    <model>/versions/<name>/         a whole model directory (mdps.json, unet/, calibration.json, ...)

:func:`promote` copies the candidate into a new version folder and checks the copy loads, then rewrites the
pointer: one object written whole (temp + rename on local disk, one PUT on S3), so a reader sees the old
version or the new one, never half of either. A job resolves the pointer once (:func:`resolve_model`,
called by the driver) and hands the resolved version to its actors, so a promotion while it runs changes
nothing in that run. A plain model directory (``mdps.json`` at its root, as ``mdps train`` writes it) can be
promoted into: its own files stay where they are as the version ``"."``, the pointer wins from then on,
and a rollback returns to it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from mdps_ray.storage.checkpoints import CheckpointError, read_model_meta, validate_model
from mdps_ray.storage.uris import exists, fresh, join, read_bytes, write_bytes

POINTER = "_CURRENT.json"
ROOT_VERSION = "."


def _pointer(model: str, so: dict[str, Any] | None) -> dict[str, Any] | None:
    uri = join(model, POINTER)
    if not exists(uri, so):
        return None
    try:
        data = json.loads(read_bytes(uri, so))
        str(data["current"])
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"expected a readable {uri} (written by `mdps promote`), got a damaged file; "
                              "restore it or promote again") from None
    return data


def _version_uri(model: str, version: str) -> str:
    return model if version == ROOT_VERSION else join(model, version)


def resolve_model(model: str, storage_options: dict[str, Any] | None = None) -> str:
    """The model directory ``model`` names now: the current version of a promoted model, else ``model`` itself."""
    pointer = _pointer(model, storage_options)
    return model if pointer is None else _version_uri(model, str(pointer["current"]))


def _copy_tree(src: str, dst: str, so: dict[str, Any] | None) -> int:
    fs, root = fresh(src, so)
    files = [p for p in fs.find(root) if not p.rsplit("/", 1)[-1].startswith(("_CURRENT", ".tmp"))]
    files = [p for p in files if "/versions/" not in p[len(root):]]
    for path in files:
        rel = path[len(root.rstrip("/")) + 1:]
        write_bytes(join(dst, rel), read_bytes(join(src, rel), so), so)
    return len(files)


def promote(candidate: str, to: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Make ``candidate`` (a model directory) the current version of ``to``; returns the new pointer."""
    so = storage_options
    source = resolve_model(candidate, so)
    meta, _ = read_model_meta(source, so)
    validate_model(source, so)  # a damaged candidate is refused before anything is written
    pointer = _pointer(to, so)
    if pointer is None:
        previous = ROOT_VERSION if exists(join(to, "mdps.json"), so) else None
        history: list[dict[str, Any]] = []
    else:
        previous, history = str(pointer["current"]), list(pointer.get("history", []))
    now = datetime.now(UTC)
    version = f"versions/{now.strftime('%Y%m%dT%H%M%S%fZ')}-{str(meta['weights_digest'])[:12]}"
    files = _copy_tree(source, join(to, version), so)
    validate_model(join(to, version), so)  # the copy loads: only then does the pointer move
    record = {"current": version, "previous": previous, "source": source, "files": files,
              "promoted_at": now.isoformat(),
              "history": [*history, {"version": version, "source": source, "promoted_at": now.isoformat()}]}
    write_bytes(join(to, POINTER), json.dumps(record, indent=2).encode(), so)
    return record


def rollback(model: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Point ``model`` back at the version before the current one (and the current one becomes the previous)."""
    pointer = _pointer(model, storage_options)
    if pointer is None or not pointer.get("previous"):
        raise CheckpointError(f"expected a promoted model with a previous version at {model}, found none; "
                              "`mdps promote CANDIDATE --to MODEL` keeps the replaced version for a rollback")
    now = datetime.now(UTC).isoformat()
    current, previous = str(pointer["previous"]), str(pointer["current"])
    validate_model(_version_uri(model, current), storage_options)
    record = {**pointer, "current": current, "previous": previous, "promoted_at": now,
              "history": [*pointer.get("history", []), {"version": current, "rollback_from": previous,
                                                        "promoted_at": now}]}
    write_bytes(join(model, POINTER), json.dumps(record, indent=2).encode(), storage_options)
    return record
