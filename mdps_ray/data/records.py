"""Dataset layouts: MVTec AD / BTAD trees and plain folders, listed into records."""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from mdps_ray.storage.uris import fresh, read_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")  # what Pillow decodes here
NORMAL_NAMES = ("good", "ok")


@dataclass(frozen=True)
class ImageRecord:
    """One input image.

    Attributes:
        uri: where the image is.
        image_id: stable id ``<category>/<split>/<defect_type>/<stem>`` (the noise key).
        category, split, defect_type: from the layout.
        label: 0 normal, 1 anomalous, None unknown.
        mask_uri: ground-truth mask, or None (normal images and unlabelled data).
        stat: what the listing said of the object (size, ETag or mtime, type), so the manifest needs
            no lookup per object; None when the listing did not say (a user manifest).
    """

    uri: str
    image_id: str
    category: str
    split: str
    defect_type: str
    label: int | None
    mask_uri: str | None
    stat: Stat | None = None


@dataclass(frozen=True)
class Stat:
    """An object's metadata from one listing page: size, ETag (object stores), mtime, type."""

    size: int
    etag: str
    mtime: str
    type: str

    @classmethod
    def of(cls, info: dict[str, Any]) -> Stat:
        return cls(int(info.get("size") or 0), str(info.get("ETag") or info.get("etag") or "").strip('"'),
                   str(info.get("mtime") or info.get("LastModified") or info.get("created") or ""),
                   str(info.get("type") or "file"))


def _uri(fs: Any, path: str, root_uri: str) -> str:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local") and "://" not in root_uri:
        return path
    return fs.unstrip_protocol(path)


def list_mvtec(root_uri: str, split: str = "test", storage_options: dict[str, Any] | None = None) -> list[ImageRecord]:
    """Records of ``<root>/<split>/<defect>/*`` with masks from ``<root>/ground_truth``, sorted.

    The category is the root folder's name. Normal folders are ``good`` (MVTec) or ``ok`` (BTAD).
    """
    fs, root = fresh(root_uri, storage_options)
    root = root.rstrip("/")
    category = root.rsplit("/", 1)[-1]
    split_dir = f"{root}/{split}"
    if not fs.isdir(split_dir):
        raise FileNotFoundError(f"expected an MVTec-layout folder {root_uri}/{split}/<defect>/, found none")
    records = []
    for defect_dir in sorted(e["name"] for e in fs.ls(split_dir, detail=True) if e.get("type") == "directory"):
        defect = defect_dir.rstrip("/").rsplit("/", 1)[-1]
        normal = defect in NORMAL_NAMES
        masks = {} if normal else _mask_index(fs, f"{root}/ground_truth/{defect}")
        listed = _files(fs, defect_dir, recursive=False)
        images = [p for p in sorted(listed) if p.lower().endswith(IMAGE_SUFFIXES)]
        for path, stem in zip(images, id_stems([p.rsplit("/", 1)[-1] for p in images]), strict=True):
            mask = masks.get(path.rsplit("/", 1)[-1].rsplit(".", 1)[0])
            records.append(
                ImageRecord(
                    uri=_uri(fs, path, root_uri),
                    image_id=f"{category}/{split}/{defect}/{stem}",
                    category=category,
                    split=split,
                    defect_type=defect,
                    label=0 if normal else 1,
                    mask_uri=None if mask is None else _uri(fs, mask, root_uri),
                    stat=listed[path],
                )
            )
    return records


def _files(fs: Any, folder: str, recursive: bool) -> dict[str, Stat]:
    """Path → :class:`Stat` of the files in a folder, from one paginated listing (object stores: the
    ListObjectsV2 pages carry size and ETag, so there is no lookup per object); on local disk from
    ``os.scandir``, without fsspec's info dict per file."""
    if not isinstance(fs, LocalFileSystem):
        entries = fs.find(folder, detail=True) if recursive else {e["name"]: e for e in fs.ls(folder, detail=True)}
        return {p: Stat.of(e) for p, e in entries.items() if e.get("type") != "directory"}
    out: dict[str, Stat] = {}
    seen = {_dir_key(folder)}  # (device, inode) of every folder walked: a link back to one is a loop
    skipped: Counter[str] = Counter()
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:  # a folder that cannot be read (permissions, gone since it was listed)
            skipped["unreadable folders"] += 1
            continue
        for e in entries:
            try:
                is_dir = e.is_dir(follow_symlinks=True)
            except OSError:  # ELOOP: a link to itself
                skipped["links that loop"] += 1
                continue
            if is_dir:
                key = _dir_key(e.path)
                if key is None or key in seen:
                    skipped["links that loop" if key is not None else "unreadable folders"] += 1
                elif recursive:
                    seen.add(key)
                    stack.append(e.path)
                continue
            try:
                st = e.stat(follow_symlinks=True)
            except FileNotFoundError:  # a dangling link: listed, then an error row when read
                out[e.path] = Stat(0, "", "", "other")
                continue
            except OSError:
                skipped["links that loop"] += 1
                continue
            kind = "file" if stat.S_ISREG(st.st_mode) else "other"
            out[e.path] = Stat(st.st_size, "", str(st.st_mtime), kind)
    if skipped:
        counts = ", ".join(f"{n} {what}" for what, n in sorted(skipped.items()))
        warnings.warn(f"listing {folder}: skipped {counts}", UserWarning, stacklevel=2)
    return out


def _dir_key(path: str) -> tuple[int, int] | None:
    """(device, inode) of the folder a path leads to, or None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _mask_index(fs: Any, folder: str) -> dict[str, str]:
    if not fs.isdir(folder):
        return {}
    index = {}
    for path in fs.ls(folder, detail=False):
        stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        index[stem.removesuffix("_mask")] = path
    return index


def detect_layout(uri: str, storage_options: dict[str, Any] | None = None) -> str:
    """mvtec (has train/ or test/ folders), manifest (.parquet/.csv file), or folder."""
    if uri.endswith((".parquet", ".csv")):
        return "manifest"
    fs, path = fresh(uri, storage_options)
    if not fs.exists(path):
        raise FileNotFoundError(f"expected a dataset at {uri}, found nothing there")
    if fs.isfile(path):  # one image: a folder of one; anything else is no dataset
        if path.lower().endswith(IMAGE_SUFFIXES):
            return "folder"
        raise ValueError(f"expected a dataset at {uri} (a folder, an MVTec/BTAD root, a manifest .parquet/.csv or "
                         f"one image {'/'.join(IMAGE_SUFFIXES)}), got a file of another kind")
    names = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)}
    return "mvtec" if names & {"train", "test"} else "folder"


def list_folder(uri: str, storage_options: dict[str, Any] | None = None) -> list[ImageRecord]:
    """Every image below a folder (recursively), unlabelled; the category is the folder name."""
    fs, root = fresh(uri, storage_options)
    root = root.rstrip("/")
    if fs.isfile(root):  # one image given as --data: the folder that holds it, listing only it
        image = root
        root = root.rsplit("/", 1)[0]
        listed = {p: s for p, s in _files(fs, root, recursive=False).items() if p == image}
    else:
        listed = _files(fs, root, recursive=True)
    category = PurePosixPath(root).name
    images = [p for p in sorted(listed) if p.lower().endswith(IMAGE_SUFFIXES)]
    others = Counter(PurePosixPath(p).suffix.lower() or "(none)" for p in listed if not p.lower().endswith(
        IMAGE_SUFFIXES))
    if others:
        named = ", ".join(f"{n} {ext}" for ext, n in sorted(others.items()))
        warnings.warn(f"listing {uri}: skipped files that are not images this tool reads ({named}); it reads "
                      f"{' '.join(IMAGE_SUFFIXES)}", UserWarning, stacklevel=2)
    rels = id_stems([p[len(root):].lstrip("/") for p in images])
    return [ImageRecord(fs.unstrip_protocol(path) if "://" in uri else path, f"{category}/{rel}", category, "", "",
                        None, None, listed[path]) for path, rel in zip(images, rels, strict=True)]


def id_stems(names: list[str]) -> list[str]:
    """Image-id parts of file names: the name without its extension, unless two files share that stem
    (``x.png`` and ``x.jpg``): those keep their extension, so each image has its own id."""
    stems = [n.rsplit(".", 1)[0] for n in names]
    shared = {s for s, k in Counter(stems).items() if k > 1}
    return [n if s in shared else s for n, s in zip(names, stems, strict=True)]


_LABELS: dict[Any, int | None] = {"0": 0, "1": 1, "": None, 0.0: 0, 1.0: 1}


def read_manifest_file(uri: str, storage_options: dict[str, Any] | None = None) -> list[ImageRecord]:
    """A user manifest (Parquet or CSV) with a ``uri`` column and optional category/label/mask_uri/image_id,
    and optional ``etag`` (with ``size``): an object's version as given, so it is not looked up."""
    data = read_bytes(uri, storage_options)
    table = pq.read_table(io.BytesIO(data)) if uri.endswith(".parquet") else pacsv.read_csv(io.BytesIO(data))
    if "uri" not in table.column_names:
        raise ValueError(f"expected a 'uri' column in the manifest {uri}, got columns {table.column_names}")
    rows = table.to_pylist()
    out = []
    stems = id_stems([PurePosixPath(str(r["uri"]).split("://", 1)[-1]).as_posix().strip("/") for r in rows])
    for row, stem in zip(rows, stems, strict=True):
        category = str(row.get("category") or "default")
        label = _LABELS.get(row.get("label"), row.get("label"))  # one bad cell makes a CSV column text: "0", "1"
        if label not in (None, 0, 1):
            raise ValueError(f"expected labels 0 (normal), 1 (anomalous) or empty in the manifest {uri}, got "
                             f"{label!r} for {row['uri']}; fix the manifest before scoring")
        stat = None  # looked up by the manifest builder, unless the user's manifest gives the version
        if row.get("etag"):
            stat = Stat(int(row.get("size") or 0), str(row["etag"]).strip('"'), "", "file")
        out.append(ImageRecord(str(row["uri"]), str(row.get("image_id") or stem), category, "", "",
                               None if label is None else int(label), row.get("mask_uri") or None, stat))
    return out


def list_records(uri: str, layout: str, split: str, storage_options: dict[str, Any] | None = None) -> list[ImageRecord]:
    """Records of a dataset in any supported layout."""
    layout = detect_layout(uri, storage_options) if layout == "auto" else layout
    if layout == "mvtec":
        return list_mvtec(uri, split, storage_options)
    if layout == "folder":
        return list_folder(uri, storage_options)
    return read_manifest_file(uri, storage_options)
