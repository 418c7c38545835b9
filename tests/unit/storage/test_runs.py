"""Run directories on memory://: staged parts, dedup, commit layout, committed runs."""

from __future__ import annotations

from pathlib import Path

from mdps_ray.storage.maps import member_uri, split_member
from mdps_ray.storage.results import part_name, rows_to_table, table_bytes
from mdps_ray.storage.runs import (
    RunPaths,
    commit,
    committed_runs,
    dedup,
    finalize,
    object_key,
    read_results,
    staged_rows,
)
from mdps_ray.storage.uris import exists, join, read_json, write_bytes


def _rows(*ids: str, status: str = "ok", category: str = "c") -> list[dict]:
    return [{"run_id": "r", "image_id": i, "category": category, "status": status, "score": 1.0} for i in ids]


def test_a_retried_batch_stages_the_same_part_and_resume_keeps_one_row_per_image() -> None:
    paths = RunPaths("memory://runs-a/out", "r")
    for ids in (["a", "b"], ["b", "a"], ["c"]):  # the retry of (a, b) lands under the same name
        write_bytes(join(paths.staging, part_name(ids)), table_bytes(rows_to_table(_rows(*ids))))
    staged = staged_rows(paths)
    assert sorted(staged.column("image_id").to_pylist()) == ["a", "b", "c"]
    doubled = rows_to_table(_rows("a", "a", "b"))
    assert dedup(doubled).column("image_id").to_pylist() == ["a", "b"]
    retried = rows_to_table(_rows("a", "b", status="error") + _rows("b"))  # b failed, then a resume scored it
    kept = dedup(retried)
    assert kept.column("image_id").to_pylist() == ["a", "b"] and kept.column("status").to_pylist() == ["error", "ok"]


def test_commit_partitions_results_by_category_and_keeps_errors_apart() -> None:
    paths = RunPaths("memory://runs-b/out", "r")
    table = rows_to_table(_rows("a", "b") + _rows("x", category="d") + _rows("e", status="error"))
    write_bytes(join(paths.staging, "part-x.parquet"), table_bytes(table))
    commit(paths, table)
    assert committed_runs("memory://runs-b/out") == []  # results alone are not a committed run
    finalize(paths, {"overall": {"n_images": 4}}, {"counts": {"rows": 4}})
    assert committed_runs("memory://runs-b/out") == ["r"]
    assert read_json(paths.metrics)["overall"]["n_images"] == 4 and not exists(paths.staging)
    assert sorted(read_results(paths).column("image_id").to_pylist()) == ["a", "b", "x"]
    assert read_results(paths, errors=True).column("image_id").to_pylist() == ["e"]


def test_names_from_the_data_cannot_leave_their_folder_or_collide(tmp_path: Path) -> None:
    paths = RunPaths(str(tmp_path / "out"), "r")
    hostile = ["../../../x", "/etc/passwd", "a/b", "a//b", "a/./b", "..", "a b", "ü", "a~b", "x" * 300]
    keys = [object_key(n) for n in hostile]
    assert len(set(keys)) == len(keys)
    for name, key in zip(hostile, keys, strict=True):
        assert ("/" not in key and key not in ("", ".", "..") and ".." not in key.split("~")[0]) or "~" in key
        target = Path(paths.recon_uri(name)).resolve()
        assert target.parent == (tmp_path / "out" / "r" / "recons").resolve(), name
        chunk = paths.chunk_uri("part-x.parquet")
        assert split_member(member_uri(chunk, key)) == (chunk, key), name  # a map's address inside its chunk
    assert object_key("bottle") == "bottle" and object_key("good_000.png") == "good_000.png"
    table = rows_to_table(_rows("a", category="../../../escape"))
    commit(paths, table)
    written = [p for p in (tmp_path / "out").rglob("*.parquet")]
    assert written and all((tmp_path / "out" / "r" / "results") in p.parents for p in written)
    assert read_results(paths).column("category").to_pylist() == ["../../../escape"]  # the row keeps the name
