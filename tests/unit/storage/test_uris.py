"""Writes that are whole or absent, and a writability probe that leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mdps_ray.storage import uris
from mdps_ray.storage.results import table_bytes


def test_a_write_killed_midway_leaves_the_previous_file_not_a_torn_one(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "run" / "manifest.parquet"
    uris.write_bytes(str(target), table_bytes(pa.table({"image_id": ["a", "b"]})))

    def killed(src: str, dst: str) -> None:  # the process dies after the bytes, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(uris.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        uris.write_bytes(str(target), table_bytes(pa.table({"image_id": ["c"] * 10_000})))
    monkeypatch.undo()
    assert pq.read_table(target).column("image_id").to_pylist() == ["a", "b"]
    assert os.listdir(target.parent) == ["manifest.parquet"]  # no temporary file is left either


def test_probe_writable_leaves_no_file_and_no_new_folder(tmp_path: Path) -> None:
    uris.probe_writable(str(tmp_path / "a" / "b" / "model"))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    uris.probe_writable(str(tmp_path / "kept"))
    assert list(tmp_path.iterdir()) == [tmp_path / "kept"] and list((tmp_path / "kept").iterdir()) == []
    (tmp_path / "file").write_text("a file where a folder must go")
    with pytest.raises(OSError):
        uris.probe_writable(str(tmp_path / "file" / "sub"))
