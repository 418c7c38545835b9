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
from fsspec.implementations.local import LocalFileSystem

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
CHUNK = 256


def content_key(image_id: str, stat: Stat | None, fs: Any, path: str) -> str:
    """sha256(image id | ETag), or sha256(image id | sha256(bytes)) without an ETag; '' for a missing file or
    one that is not a regular file (a FIFO would block the read; it becomes an error row when decoded)."""
    if stat is None or stat.type != "file":
        return ""
    if stat.etag:
        version = stat.etag
    elif isinstance(fs, LocalFileSystem):  # no fsspec layer per file: 10⁵ local files hash in seconds
        with open(path, "rb") as f:
            version = hashlib.sha256(f.read()).hexdigest()
    else:
        version = hashlib.sha256(fs.cat_file(path)).hexdigest()
    return hashlib.sha256(f"{image_id}|{version}".encode()).hexdigest()[:24]


def _stat(fs: Any, path: str) -> Stat | None:
    try:
        return Stat.of(fs.info(path))
    except FileNotFoundError:
        return None


class _Resolver:
    """URI → (filesystem, path), the filesystem made once per scheme (not once per image)."""

    def __init__(self, storage_options: dict[str, Any] | None) -> None:
        self.so = storage_options
        self.by_scheme: dict[str, Any] = {}

    def __call__(self, uri: str) -> tuple[Any, str]:
        scheme = uri.split("://", 1)[0] if "://" in uri else ""
        if scheme not in self.by_scheme:
            self.by_scheme[scheme] = filesystem(uri, self.so)[0]
        fs = self.by_scheme[scheme]
        return fs, uri if not scheme else fs._strip_protocol(uri)


def _version(r: ImageRecord, resolve: _Resolver) -> tuple[int, str, str]:
    """(size, etag or mtime, content key) of one record; a record the listing did not stat is looked up. A row that
    cannot be looked up on its own (an unknown protocol, an http(s) host that does not answer) gets no version
    here and becomes an error row when it is read; the run's store failing still fails the run."""
    try:
        fs, path = resolve(r.uri)
        stat = r.stat if r.stat is not None else _stat(fs, path)  # a user manifest: one lookup, in a thread
    except ValueError:  # fsspec: "Protocol not known"
        return 0, "", ""
    except OSError:
        if r.uri.lower().startswith(("http://", "https://")):
            return 0, "", ""
        raise
    if stat is None:
        return 0, "", ""
    return stat.size, stat.etag or stat.mtime, content_key(r.image_id, stat, fs, path)


def build_manifest(records: list[ImageRecord], storage_options: dict[str, Any] | None = None) -> pa.Table:
    """The manifest table (sorted by image id) from listed records: their listing's metadata is used as it
    is; records without it (a user manifest) are looked up, concurrently. Built column by column."""
    ids = [r.image_id for r in records]
    if len(set(ids)) != len(ids):
        dup = sorted(i for i, n in Counter(ids).items() if n > 1)[:3]  # linear: 10⁵ ids in milliseconds
        raise ValueError(f"expected unique image ids, got duplicates such as {dup}")
    ordered = sorted(records, key=lambda r: r.image_id)
    resolve = _Resolver(storage_options)
    chunks = [ordered[i:i + CHUNK] for i in range(0, len(ordered), CHUNK)]  # one future per chunk, not per image
    with ThreadPoolExecutor(THREADS) as pool:
        versions = [v for part in pool.map(lambda rs: [_version(r, resolve) for r in rs], chunks) for v in part]
    columns = {
        "image_id": [r.image_id for r in ordered], "uri": [r.uri for r in ordered],
        "size": [v[0] for v in versions], "etag": [v[1] for v in versions], "content_key": [v[2] for v in versions],
        "category": [r.category for r in ordered], "split": [r.split for r in ordered],
        "defect_type": [r.defect_type for r in ordered], "label": [r.label for r in ordered],
        "mask_uri": [r.mask_uri for r in ordered],
    }
    return pa.table({f.name: pa.array(columns[f.name], type=f.type) for f in MANIFEST_SCHEMA}, schema=MANIFEST_SCHEMA)


def refresh_versions(manifest: pa.Table, image_ids: set[str],
                     storage_options: dict[str, Any] | None = None) -> pa.Table:
    """The manifest with the size, version and content key of the rows ``image_ids`` names looked up again: the
    inputs an earlier attempt could not score, which may have been fixed since, so the row scored now carries the
    key of the content it scored (it kept the failed attempt's)."""
    if not image_ids:
        return manifest
    resolve = _Resolver(storage_options)
    rows = manifest.to_pylist()
    for row in rows:
        if row["image_id"] in image_ids:
            record = ImageRecord(row["uri"], row["image_id"], row["category"], row["split"], row["defect_type"],
                                 row["label"], row["mask_uri"], None)
            row["size"], row["etag"], row["content_key"] = _version(record, resolve)
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
