"""Listing-time validation: bad labels and duplicate ids are refused before any image is scored."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from mdps_ray.data.manifest import build_manifest
from mdps_ray.data.records import ImageRecord, read_manifest_file


def test_a_label_other_than_0_or_1_is_refused_at_listing(tmp_path: Path) -> None:
    f = tmp_path / "m.csv"
    pacsv.write_csv(pa.table({"uri": ["a.png", "b.png"], "label": [0, 7]}), f)
    with pytest.raises(ValueError, match=r"expected labels 0 \(normal\), 1 \(anomalous\) or empty .* got 7"):
        read_manifest_file(str(f))


def test_a_bad_label_is_blamed_on_its_own_row_and_text_labels_read(tmp_path: Path) -> None:
    """One bad cell makes the CSV column text; the first (valid) row's "0" was then the one reported."""
    f = tmp_path / "m.csv"
    f.write_text("uri,label\na.png,0\nb.png,1\nc.png,bad\n")
    with pytest.raises(ValueError, match=r"got 'bad' for c\.png"):
        read_manifest_file(str(f))
    f.write_text("uri,label\na.png,0\nb.png,1\nc.png,\n")
    assert [r.label for r in read_manifest_file(str(f))] == [0, 1, None]


def test_duplicate_ids_are_named_at_archive_size() -> None:
    """10⁵ ids: the old quadratic check took ≈ 720 s here before its one line; the Counter takes milliseconds."""
    n = 100_000
    records = [ImageRecord(f"memory://x/{i}.png", f"id{i}", "c", "", "", None, None) for i in range(n)]
    records.append(records[5])
    with pytest.raises(ValueError, match=r"duplicates such as \['id5'\]"):
        build_manifest(records)


def test_a_rename_a_copy_and_a_same_size_same_mtime_edit_get_new_content_keys(tmp_path: Path) -> None:
    """The nightly skip keys on this: each of the three was skipped (never scored) when the key was size+mtime."""
    import os
    import shutil

    def keys() -> dict[str, str]:
        recs = [ImageRecord(str(p), p.name, "c", "", "", None, None) for p in sorted(tmp_path.glob("*.png"))]
        t = build_manifest(recs)
        return dict(zip(t.column("image_id").to_pylist(), t.column("content_key").to_pylist(), strict=True))

    (tmp_path / "a.png").write_bytes(b"\x89PNG pixels one")
    first = keys()["a.png"]
    shutil.copy2(tmp_path / "a.png", tmp_path / "copy.png")  # cp -p: same bytes, size and mtime
    (tmp_path / "a.png").rename(tmp_path / "renamed.png")
    after = keys()
    assert len({first, after["copy.png"], after["renamed.png"]}) == 3
    stat = os.stat(tmp_path / "renamed.png")
    (tmp_path / "renamed.png").write_bytes(b"\x89PNG pixels two")  # other pixels, same size
    os.utime(tmp_path / "renamed.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same mtime
    assert keys()["renamed.png"] != after["renamed.png"]
    assert keys() == keys()  # and it is a key: the same listing gives the same keys
