"""Listing a local folder never follows a loop and never fails on one entry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from mdps_ray.data.records import list_folder


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)


def test_links_that_loop_are_skipped_with_a_count_and_every_image_is_listed_once(tmp_path: Path) -> None:
    """`ln -s . loop` was followed 40 levels deep, then "Too many levels of symbolic links" ended the run."""
    root = tmp_path / "parts"
    _image(root / "a.png")
    _image(root / "sub" / "b.png")
    os.symlink(".", root / "loop")  # a link to its own folder
    os.symlink("..", root / "sub" / "up")  # a link to an ancestor
    os.symlink("self", root / "self")  # a link to itself (ELOOP)
    os.symlink("nowhere.png", root / "dangling.png")  # dangling: listed, then an error row when read
    with pytest.warns(UserWarning, match=r"skipped 3 links that loop"):
        records = list_folder(str(root))
    names = sorted(Path(r.uri).name for r in records)
    assert names == ["a.png", "b.png", "dangling.png"]
    assert len({r.image_id for r in records}) == 3


def test_files_of_other_kinds_are_named_once_by_extension(tmp_path: Path) -> None:
    root = tmp_path / "parts"
    _image(root / "a.png")
    for name in ("b.ppm", "c.ppm", "notes.txt", "README"):
        (root / name).write_text("x")
    with pytest.warns(UserWarning, match=r"skipped files .* \(1 \(none\), 2 \.ppm, 1 \.txt\)") as caught:
        records = list_folder(str(root))
    assert [Path(r.uri).name for r in records] == ["a.png"] and len(caught) == 1
