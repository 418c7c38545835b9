"""Dataset layouts: MVTec AD / BTAD trees and plain folders, listed into records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mdps_ray.io.uris import filesystem

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
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
    """

    uri: str
    image_id: str
    category: str
    split: str
    defect_type: str
    label: int | None
    mask_uri: str | None


def _uri(fs: Any, path: str, root_uri: str) -> str:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local") and "://" not in root_uri:
        return path
    return fs.unstrip_protocol(path)


def list_mvtec(root_uri: str, split: str = "test", storage_options: dict[str, Any] | None = None) -> list[ImageRecord]:
    """Records of ``<root>/<split>/<defect>/*`` with masks from ``<root>/ground_truth``, sorted.

    The category is the root folder's name. Normal folders are ``good`` (MVTec) or ``ok`` (BTAD).
    """
    fs, root = filesystem(root_uri, storage_options)
    root = root.rstrip("/")
    category = root.rsplit("/", 1)[-1]
    split_dir = f"{root}/{split}"
    if not fs.isdir(split_dir):
        raise FileNotFoundError(f"expected an MVTec-layout folder {root_uri}/{split}/<defect>/, found none")
    records = []
    for defect_dir in sorted(p for p in fs.ls(split_dir, detail=False) if fs.isdir(p)):
        defect = defect_dir.rstrip("/").rsplit("/", 1)[-1]
        normal = defect in NORMAL_NAMES
        masks = {} if normal else _mask_index(fs, f"{root}/ground_truth/{defect}")
        for path in sorted(fs.ls(defect_dir, detail=False)):
            name = path.rsplit("/", 1)[-1]
            if not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            stem = name.rsplit(".", 1)[0]
            mask = masks.get(stem)
            records.append(
                ImageRecord(
                    uri=_uri(fs, path, root_uri),
                    image_id=f"{category}/{split}/{defect}/{stem}",
                    category=category,
                    split=split,
                    defect_type=defect,
                    label=0 if normal else 1,
                    mask_uri=None if mask is None else _uri(fs, mask, root_uri),
                )
            )
    return records


def _mask_index(fs: Any, folder: str) -> dict[str, str]:
    if not fs.isdir(folder):
        return {}
    index = {}
    for path in fs.ls(folder, detail=False):
        stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        index[stem.removesuffix("_mask")] = path
    return index
