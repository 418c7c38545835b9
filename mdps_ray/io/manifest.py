"""The input manifest: every image listed once, with what identifies its content.

Columns: image_id, uri, size, etag (or mtime), content_key, category, split, defect_type, label,
mask_uri. ``content_key`` (etag, else size+mtime) identifies a version of an object, so nightly
runs can skip images already scored with the same model and configuration.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mdps_ray.io.datasets import IMAGE_SUFFIXES, ImageRecord, list_mvtec
from mdps_ray.io.uris import filesystem, read_bytes

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


def detect_layout(uri: str, storage_options: dict[str, Any] | None = None) -> str:
    """mvtec (has train/ or test/ folders), manifest (.parquet/.csv file), or folder."""
    if uri.endswith((".parquet", ".csv")):
        return "manifest"
    fs, path = filesystem(uri, storage_options)
    if not fs.exists(path):
        raise FileNotFoundError(f"expected a dataset at {uri}, found nothing there")
    names = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)}
    return "mvtec" if names & {"train", "test"} else "folder"


def list_folder(uri: str, storage_options: dict[str, Any] | None = None) -> list[ImageRecord]:
    """Every image below a folder (recursively), unlabelled; the category is the folder name."""
    fs, root = filesystem(uri, storage_options)
    root = root.rstrip("/")
    category = PurePosixPath(root).name
    records = []
    for path in sorted(fs.find(root)):
        if path.lower().endswith(IMAGE_SUFFIXES):
            rel = path[len(root) :].lstrip("/").rsplit(".", 1)[0]
            records.append(ImageRecord(fs.unstrip_protocol(path) if "://" in uri else path,
                                       f"{category}/{rel}", category, "", "", None, None))
    return records


def read_manifest_file(uri: str, storage_options: dict[str, Any] | None = None) -> list[ImageRecord]:
    """A user manifest (Parquet or CSV) with a ``uri`` column and optional category/label/mask_uri."""
    data = read_bytes(uri, storage_options)
    table = pq.read_table(io.BytesIO(data)) if uri.endswith(".parquet") else pacsv.read_csv(io.BytesIO(data))
    if "uri" not in table.column_names:
        raise ValueError(f"expected a 'uri' column in the manifest {uri}, got columns {table.column_names}")
    rows = table.to_pylist()
    out = []
    for row in rows:
        category = str(row.get("category") or "default")
        stem = PurePosixPath(str(row["uri"]).split("://", 1)[-1]).with_suffix("").as_posix().strip("/")
        label = row.get("label")
        out.append(ImageRecord(str(row["uri"]), str(row.get("image_id") or stem), category, "", "",
                               None if label is None else int(label), row.get("mask_uri") or None))
    return out


def list_records(uri: str, layout: str, split: str, storage_options: dict[str, Any] | None = None) -> list[ImageRecord]:
    """Records of a dataset in any supported layout."""
    layout = detect_layout(uri, storage_options) if layout == "auto" else layout
    if layout == "mvtec":
        return list_mvtec(uri, split, storage_options)
    if layout == "folder":
        return list_folder(uri, storage_options)
    return read_manifest_file(uri, storage_options)


def build_manifest(records: list[ImageRecord], storage_options: dict[str, Any] | None = None) -> pa.Table:
    """Stat every object once and return the manifest table (sorted by image id)."""
    ids = [r.image_id for r in records]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise ValueError(f"expected unique image ids, got duplicates such as {dup}")
    rows = []
    for r in sorted(records, key=lambda r: r.image_id):
        fs, path = filesystem(r.uri, storage_options)
        try:
            info = fs.info(path)
        except FileNotFoundError:
            info = {}
        etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
        mtime = str(info.get("mtime") or info.get("LastModified") or info.get("created") or "")
        size = int(info.get("size") or 0)
        key = etag or hashlib.sha256(f"{size}|{mtime}".encode()).hexdigest()[:16]
        rows.append({"image_id": r.image_id, "uri": r.uri, "size": size, "etag": etag or mtime,
                     "content_key": key, "category": r.category, "split": r.split,
                     "defect_type": r.defect_type, "label": r.label, "mask_uri": r.mask_uri})
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
