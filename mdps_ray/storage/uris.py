"""URIs through fsspec: local paths, ``file://``, ``memory://``, ``s3://``, ``gs://``."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

# botocore's retry policy for every S3 call (driver, actors, train workers), unless storage_options sets
# ``config_kwargs``: adaptive mode retries throttling (503 SlowDown), 5xx, resets and refused connections
# with exponential backoff (capped at 20 s a try), about a minute and a half of outage at 10 attempts;
# connect/read timeouts bound a hung request.
S3_RETRIES = {"retries": {"mode": "adaptive", "max_attempts": 10}, "connect_timeout": 10, "read_timeout": 60}


def with_retries(uri: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """``storage_options`` with :data:`S3_RETRIES` as the ``config_kwargs`` of an ``s3://`` URI that has none."""
    so = dict(storage_options or {})
    if uri.startswith(("s3://", "s3a://")) and "config_kwargs" not in so:
        so["config_kwargs"] = S3_RETRIES
    return so


def filesystem(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem serving ``uri`` and the path within it (S3 with :data:`S3_RETRIES`). A local path (no
    ``://``) is always the local file it names: fsspec would read ``a::b.png`` as a chain of two URLs."""
    if "://" not in uri and "::" in uri:
        return LocalFileSystem(), os.path.abspath(uri)
    if "://" not in uri or uri.lower().startswith(_NO_OPTIONS):
        storage_options = None  # the job's options are its object store's: credentials mean nothing here
    fs, path = url_to_fs(uri, **with_retries(uri, storage_options))
    return fs, path


_NO_OPTIONS = ("file://", "http://", "https://")  # local files, and rows on web hosts of their own


def absolute(uri: str) -> str:
    """A local path made absolute (URIs with a scheme are returned as they are)."""
    return uri if "://" in uri else os.path.abspath(uri)


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI with '/' (no normalisation of the scheme)."""
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def _is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return bool({"s3", "s3a"} & set(protocols))


def read_bytes(uri: str, storage_options: dict[str, Any] | None = None, concurrent: bool = False) -> bytes:
    """The whole object at ``uri``: on S3 in one GET (s3fs would first send a HEAD for the size, a second
    request per image); ``concurrent`` lets s3fs fetch a large object (weights) in ranged parts."""
    fs, path = filesystem(uri, storage_options)
    if _is_s3(fs) and not concurrent:
        return bytes(fs.cat_file(path, max_concurrency=1))
    return bytes(fs.cat_file(path))


def write_bytes(uri: str, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    """Write ``data`` to ``uri`` whole or not at all, creating parent folders where the filesystem has them.

    On a filesystem that can rename (local disk, NFS) the bytes go to a temporary name in the same
    folder and are renamed over ``uri``: a process killed mid-write leaves the old file or none, never
    a torn one. Object stores (S3, GCS) make a PUT visible only once it is complete.
    """
    fs, path = filesystem(uri, storage_options)
    if not isinstance(fs, LocalFileSystem):  # no folders to make: object stores have keys, memory:// makes them
        fs.pipe_file(path, data)
        return
    parent = path.rsplit("/", 1)[0]
    if parent and parent != path:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def probe_writable(uri: str, storage_options: dict[str, Any] | None = None) -> None:
    """Raise unless a file can be written under ``uri``; leaves nothing behind (no empty local folders)."""
    fs, path = filesystem(uri, storage_options)
    created = []
    if isinstance(fs, LocalFileSystem):
        folder = path
        while folder and not os.path.exists(folder):
            created.append(folder)
            folder = os.path.dirname(folder)
    probe = join(uri, f".mdps_write_probe-{uuid.uuid4().hex[:8]}")
    try:
        write_bytes(probe, b"ok", storage_options)
        remove(probe, storage_options)
    finally:
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def write_json(uri: str, data: Any, storage_options: dict[str, Any] | None = None) -> None:
    write_bytes(uri, json.dumps(data, indent=2, sort_keys=True, default=str).encode(), storage_options)


def read_json(uri: str, storage_options: dict[str, Any] | None = None) -> Any:
    return json.loads(read_bytes(uri, storage_options))


def fresh(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """:func:`filesystem`, with its cached directory listings of ``uri`` dropped: other processes (actors,
    a crashed attempt) write what is read next, and s3fs would answer from the listing it took before."""
    fs, path = filesystem(uri, storage_options)
    fs.invalidate_cache(path)
    return fs, path


def exists(uri: str, storage_options: dict[str, Any] | None = None) -> bool:
    fs, path = fresh(uri, storage_options)
    return bool(fs.exists(path))


def remove(uri: str, storage_options: dict[str, Any] | None = None) -> None:
    """Delete a folder and everything below it (no error when absent)."""
    fs, path = filesystem(uri, storage_options)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def check_folder_uri(uri: str, what: str, storage_options: dict[str, Any] | None = None) -> None:
    """Raise a one-line ValueError when ``uri`` (meant as a folder: an output prefix) is a file, or lies under
    one; object stores have no such clash (a key and a prefix can share a name)."""
    if "://" in uri and not uri.startswith("file://"):
        return
    path = Path(uri.removeprefix("file://")).absolute()
    for node in (path, *path.parents):
        if node.is_file():
            where = "is a file" if node == path else f"lies under the file {node}"
            raise ValueError(f"expected {what} to be a folder, got {uri}, which {where}; give a folder path")
        if node.is_dir():
            return


def remove_children(uri: str, keep: set[str], storage_options: dict[str, Any] | None = None) -> list[str]:
    """Delete every entry directly below the folder ``uri`` (and all below it) whose name is not in ``keep``;
    returns the names deleted (none when the folder is absent)."""
    fs, path = fresh(uri, storage_options)
    if not fs.exists(path):
        return []
    gone = []
    for entry in fs.ls(path, detail=False):
        name = str(entry).rstrip("/").rsplit("/", 1)[-1]
        if name not in keep:
            fs.rm(entry, recursive=True)
            gone.append(name)
    return sorted(gone)


def list_files(uri: str, suffix: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """URIs of the files below ``uri`` ending with ``suffix`` (sorted; none if absent)."""
    fs, path = fresh(uri, storage_options)
    if not fs.exists(path):
        return []
    found = sorted(p for p in fs.find(path) if p.endswith(suffix))
    return [fs.unstrip_protocol(p) if "://" in uri else p for p in found]
