"""Anomaly maps and reconstructions as objects: one chunk per scored batch, one address per image.

A scoring actor writes a batch's maps and reconstructions as one uncompressed ``.npz`` object,
``<run>/maps/<chunk>.npz``, with members ``map/<key>`` ((h, w) float16) and ``recon/<key>``
((H, W, 3) uint8), ``<key>`` the image's :func:`~mdps_ray.storage.runs.object_key`. A row's
``map_uri`` addresses its own member: ``<run>/maps/<chunk>.npz#<key>``. Runs written before
chunks (one ``<key>.npy`` map and ``recons/<key>.png`` per image) read through the same functions.

So a batch of B images costs one object, not 2·B: at 10⁶ images a night that is the difference
between 2·10⁶ PUTs and 2.5·10⁵ at batch 8.
"""

from __future__ import annotations

import io
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from mdps_ray.storage.uris import exists, read_bytes, write_bytes

_CACHE_OBJECTS = 4
_cache: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
_lock = threading.Lock()


def member_uri(chunk_uri: str, key: str) -> str:
    """The address of one image's map inside a chunk object."""
    return f"{chunk_uri}#{key}"


def split_member(uri: str) -> tuple[str, str | None]:
    """(object URI, member key) of a map URI; the key is None for a one-map ``.npy`` object."""
    head, sep, key = uri.rpartition("#")
    if sep and head.endswith(".npz") and "/" not in key:
        return head, key
    return uri, None


def write_chunk(chunk_uri: str, maps: Mapping[str, np.ndarray], recons: Mapping[str, np.ndarray],
                storage_options: dict[str, Any] | None = None) -> None:
    """One object holding ``maps`` (key → (h, w), stored float16) and ``recons`` (key → (H, W, 3) uint8)."""
    arrays = {f"map/{k}": np.ascontiguousarray(v, dtype=np.float16) for k, v in maps.items()}
    arrays.update({f"recon/{k}": np.ascontiguousarray(v, dtype=np.uint8) for k, v in recons.items()})
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    write_bytes(chunk_uri, buf.getvalue(), storage_options)


def _members(chunk_uri: str, storage_options: dict[str, Any] | None) -> dict[str, np.ndarray]:
    """Every member of a chunk, read once and kept for the next few lookups (readers walk rows of a batch
    together; chunks are written once and never change)."""
    with _lock:
        if chunk_uri in _cache:
            _cache.move_to_end(chunk_uri)
            return _cache[chunk_uri]
    try:
        with np.load(io.BytesIO(read_bytes(chunk_uri, storage_options)), allow_pickle=False) as npz:
            members = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError) as err:
        raise ValueError(f"expected a map chunk (.npz) at {chunk_uri}, got an unreadable object: {err}") from err
    with _lock:
        _cache[chunk_uri] = members
        while len(_cache) > _CACHE_OBJECTS:
            _cache.popitem(last=False)
    return members


def _member(uri: str, kind: str, storage_options: dict[str, Any] | None) -> np.ndarray:
    chunk, key = split_member(uri)
    assert key is not None
    members = _members(chunk, storage_options)
    name = f"{kind}/{key}"
    if name not in members:
        raise KeyError(f"expected {name} in the map chunk {chunk}, found {len(members)} other members")
    return members[name]


def save_map(amap: np.ndarray, uri: str, storage_options: dict[str, Any] | None = None) -> None:
    """One anomaly map (h, w) as a float16 ``.npy`` object (the layout before chunks; kept for tools)."""
    buf = io.BytesIO()
    np.save(buf, amap.astype(np.float16), allow_pickle=False)
    write_bytes(uri, buf.getvalue(), storage_options)


def read_map(row_or_uri: Mapping[str, Any] | str, storage_options: dict[str, Any] | None = None) -> np.ndarray:
    """A result row's anomaly map (or the map at a ``map_uri``) as (h, w) float32: a chunk member or a
    one-map ``.npy`` object.

    >>> import pandas as pd; row = pd.read_parquet("runs/scores/<run>/results").iloc[0]
    >>> read_map(row.to_dict()).shape   # (64, 64) for the default prior
    """
    uri = row_or_uri if isinstance(row_or_uri, str) else row_or_uri["map_uri"]
    if not uri:
        raise ValueError("expected a row with a map_uri, got one without (scored with write_maps off, or an error row)")
    if split_member(uri)[1] is None:
        return np.load(io.BytesIO(read_bytes(uri, storage_options)), allow_pickle=False).astype(np.float32)
    return _member(uri, "map", storage_options).astype(np.float32)


def read_recon(map_uri: str, legacy_png_uri: str, storage_options: dict[str, Any] | None = None
               ) -> Image.Image | None:
    """The reconstruction stored beside a row's map (RGB), from its chunk, or from the per-image PNG of
    the layout before chunks (``legacy_png_uri``); None when neither exists."""
    if map_uri and split_member(map_uri)[1] is not None:
        return Image.fromarray(_member(map_uri, "recon", storage_options), mode="RGB")
    if exists(legacy_png_uri, storage_options):
        return Image.open(io.BytesIO(read_bytes(legacy_png_uri, storage_options))).convert("RGB")
    return None
