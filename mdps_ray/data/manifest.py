"""The input manifest: every image listed once, with what identifies its content.

Columns: image_id, uri, size, etag (or mtime), content_key, category, split, defect_type, label,
mask_uri. ``content_key`` identifies one image under one name: a hash of the image id and of its
content — the object's ETag on object storage (S3 changes it whenever the object is rewritten), a
SHA-256 of the bytes where no ETag exists (local disk, NFS: size and mtime can repeat for other
pixels). Nightly runs skip an image only when this key, the model digest and the config hash were
all committed before: a renamed or copied file (a new id) and an edit in place (new content) are
scored.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from mdps_ray.data.records import ImageRecord, Stat
from mdps_ray.storage.uris import filesystem

MANIFEST_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("uri", pa.string()),
        ("size", pa.int64()),
        ("etag", pa.string()),
        ("content_key", pa.string()),
        ("category", pa.string()),
        ("split", pa.string()),
        ("defect_type", pa.string()),
        ("label", pa.int8()),
        ("mask_uri", pa.string()),
    ]
)


# Concurrent lookups and reads while building the manifest (latency-bound on object stores; hashing
# and file reads release the GIL on local disk).
THREADS = 16


def content_key(image_id: str, stat: Stat | None, fs: Any, path: str) -> str:
    """sha256(image id | ETag), or sha256(image id | sha256(bytes)) without an ETag; '' for a missing file or
    one that is not a regular file (a FIFO would block the read; it becomes an error row when decoded)."""
    if stat is None or stat.type != "file":
        return ""
    version = stat.etag or hashlib.sha256(fs.cat_file(path)).hexdigest()
    return hashlib.sha256(f"{image_id}|{version}".encode()).hexdigest()[:24]


def _stat(fs: Any, path: str) -> Stat | None:
    try:
        return Stat.of(fs.info(path))
    except FileNotFoundError:
        return None


def _row(r: ImageRecord, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    fs, path = filesystem(r.uri, storage_options)
    stat = r.stat if r.stat is not None else _stat(fs, path)  # a user manifest: one lookup, in a thread
    return {"image_id": r.image_id, "uri": r.uri, "size": 0 if stat is None else stat.size,
            "etag": "" if stat is None else (stat.etag or stat.mtime),
            "content_key": content_key(r.image_id, stat, fs, path), "category": r.category,
            "split": r.split, "defect_type": r.defect_type, "label": r.label, "mask_uri": r.mask_uri}


def build_manifest(records: list[ImageRecord], storage_options: dict[str, Any] | None = None) -> pa.Table:
    """The manifest table (sorted by image id) from listed records: their listing's metadata is used as it
    is; records without it (a user manifest) are looked up, concurrently."""
    ids = [r.image_id for r in records]
    if len(set(ids)) != len(ids):
        dup = sorted(i for i, n in Counter(ids).items() if n > 1)[:3]  # linear: 10⁵ ids in milliseconds
        raise ValueError(f"expected unique image ids, got duplicates such as {dup}")
    ordered = sorted(records, key=lambda r: r.image_id)
    with ThreadPoolExecutor(THREADS) as pool:
        rows = list(pool.map(lambda r: _row(r, storage_options), ordered, chunksize=64))
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
