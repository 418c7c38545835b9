"""The score worker without Ray: called on a hand-made numpy batch, as Ray Data would call it."""

from __future__ import annotations

from concurrent.futures import wait
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mdps_ray.config.jobs import ScoreJobConfig
from mdps_ray.data.decode import decode_batch
from mdps_ray.data.manifest import build_manifest
from mdps_ray.data.records import list_mvtec
from mdps_ray.orchestration.score_worker import ScoringWorker
from mdps_ray.storage.checkpoints import load_calibration
from mdps_ray.storage.maps import read_map, read_recon, split_member
from mdps_ray.storage.results import RESULT_SCHEMA
from mdps_ray.storage.runs import RunPaths, staged_rows

SIZE = 16


def _batch(root: Path, ids: list[str] | None = None, broken: Path | None = None) -> dict[str, np.ndarray]:
    records = list_mvtec(str(root), "test")
    table = build_manifest(records).to_pydict()
    if broken is not None:
        table["uri"][0] = str(broken)
    keep = range(len(table["uri"])) if ids is None else [table["image_id"].index(i) for i in ids]
    raw = {k: np.array([v[i] for i in keep], dtype=object) for k, v in table.items()}
    return decode_batch(raw, size=SIZE, max_pixels=10**7, storage_options={})


def _worker(model: Path, out: Path, run_id: str = "r") -> ScoringWorker:
    job = ScoreJobConfig(model=str(model), data="unused", out=str(out)).model_dump(mode="json")
    return ScoringWorker(job, run_id=run_id, dt=None, device="cpu", num_threads=2)


def test_a_batch_stages_one_row_per_image_with_maps(tiny_model: Path, synthetic_root: Path, tmp_path: Path) -> None:
    batch = _batch(synthetic_root)
    out = _worker(tiny_model, tmp_path)(batch)
    assert list(out["image_id"]) == list(batch["image_id"]) and set(out["status"]) == {"ok"}
    staged = staged_rows(RunPaths(str(tmp_path), "r"))
    assert staged.schema.remove_metadata().equals(RESULT_SCHEMA.remove_metadata())
    rows = staged.to_pylist()
    assert sorted(r["image_id"] for r in rows) == sorted(batch["image_id"])
    cal = load_calibration(str(tiny_model))
    assert cal is not None and cal.normal_scores
    for r in rows:
        assert read_map(r).shape == (SIZE, SIZE) and r["is_anomalous"] is not None and r["model_digest"]
        # the conformal p-value against the stored normal scores, and the decision agrees with it
        expected = (1 + sum(s >= r["score"] for s in cal.normal_scores)) / (len(cal.normal_scores) + 1)
        assert r["p_value"] == pytest.approx(expected)
        assert r["is_anomalous"] == (r["score"] > cal.score_threshold)
        assert read_recon(r["map_uri"], "", {}).size == (SIZE, SIZE)
    [part] = list((tmp_path / "r" / "_staging").glob("part-*.parquet"))
    assert pq.read_table(part).num_rows == len(rows)
    [chunk] = list((tmp_path / "r").rglob("*.npz"))  # the batch's maps and reconstructions: one object
    assert chunk.stem == part.stem and not list((tmp_path / "r").rglob("*.npy")) + list((tmp_path / "r").rglob("*.png"))
    assert {split_member(r["map_uri"])[0] for r in rows} == {str(chunk)}


def test_an_undecodable_input_becomes_an_error_row(tiny_model: Path, synthetic_root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    out = _worker(tiny_model, tmp_path / "o")(_batch(synthetic_root, broken=bad))
    assert list(out["status"]).count("error") == 1
    [err] = [r for r in staged_rows(RunPaths(str(tmp_path / "o"), "r")).to_pylist() if r["status"] == "error"]
    assert err["error"] and err["score"] is None and err["map_uri"] is None


def test_an_images_row_does_not_depend_on_its_batch_mates(tiny_model: Path, synthetic_root: Path,
                                                          tmp_path: Path) -> None:
    ids = list(_batch(synthetic_root)["image_id"])[:3]
    together = _worker(tiny_model, tmp_path, "all")
    together(_batch(synthetic_root, ids))
    alone = _worker(tiny_model, tmp_path, "alone")
    for i in ids:
        alone(_batch(synthetic_root, [i]))
    a = {r["image_id"]: r for r in staged_rows(RunPaths(str(tmp_path), "all")).to_pylist()}
    b = {r["image_id"]: r for r in staged_rows(RunPaths(str(tmp_path), "alone")).to_pylist()}
    assert a.keys() == b.keys() == set(ids)
    for i in ids:
        assert abs(a[i]["score"] - b[i]["score"]) <= 1e-5 and a[i]["is_anomalous"] == b[i]["is_anomalous"]


def test_async_uploads_stage_a_batch_by_the_next_call_or_flush_and_raise_a_failed_upload(
        tiny_model: Path, synthetic_root: Path, tmp_path: Path, monkeypatch) -> None:
    job = ScoreJobConfig(model=str(tiny_model), data="unused", out=str(tmp_path)).model_dump(mode="json")
    worker = ScoringWorker(job, run_id="a", dt=None, device="cpu", num_threads=2, sync_writes=False)
    ids = list(_batch(synthetic_root)["image_id"])
    first = worker(_batch(synthetic_root, ids[:2]))
    worker(_batch(synthetic_root, ids[2:4]))  # waits for the first batch's upload before returning
    assert (tmp_path / "a" / "_staging" / first["part"][0]).exists()
    worker.flush()
    assert len(staged_rows(RunPaths(str(tmp_path), "a"))) == 4
    import mdps_ray.orchestration.score_worker as sw

    def broken(*_: object) -> None:
        raise OSError("the store is down")

    monkeypatch.setattr(sw, "write_bytes", broken)
    worker(_batch(synthetic_root, ids[4:6]))  # its upload fails in the background …
    assert worker._inflight is not None
    wait([worker._inflight])  # (the upload has run, and failed, before the store comes back)
    monkeypatch.undo()
    with pytest.raises(OSError, match="the store is down"):  # … and the next call says so
        worker(_batch(synthetic_root, ids[6:8]))
