"""The ledger answers the nightly skip as reading every committed run's results would, whatever state it is in."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc

from mdps_ray.storage import ledger
from mdps_ray.storage.ledger import ledger_dir, scored_keys, write_entry
from mdps_ray.storage.results import rows_to_table
from mdps_ray.storage.runs import RunPaths, commit, committed_runs, finalize, read_results


def _run(out: str, run_id: str, keys: list[str], cfg: str = "c", success: bool = True) -> None:
    rows = [{"run_id": run_id, "image_id": f"{run_id}/{k}", "category": "line", "status": "ok", "score": 0.5,
             "content_key": k, "model_digest": "d", "config_hash": cfg} for k in keys]
    rows.append({**rows[0], "image_id": f"{run_id}/bad", "status": "error", "content_key": f"bad-{run_id}"})
    paths = RunPaths(out, run_id)
    table = rows_to_table(rows)
    commit(paths, table)
    write_entry(paths, table)
    if success:
        finalize(paths, {}, {"counts": {}})


def _by_results(out: str, cfg: str = "c") -> set[str]:
    """What the nightly skip read before the ledger: every committed run's results."""
    done: set[str] = set()
    for run_id in committed_runs(out):
        rows = read_results(RunPaths(out, run_id))
        same = pc.and_(pc.equal(rows.column("model_digest"), "d"), pc.equal(rows.column("config_hash"), cfg))
        done |= set(rows.filter(same).column("content_key").to_pylist())
    return done


def _keys(out: str, cfg: str = "c") -> set[str]:
    return set(scored_keys(out, "d", cfg).to_pylist())


def test_the_ledger_gives_the_same_skip_as_the_results_missing_stale_or_compacted(tmp_path: Path,
                                                                                 monkeypatch) -> None:
    out = str(tmp_path / "out")
    _run(out, "night-1", ["k1", "k2", "k3"])
    _run(out, "night-2", ["k3", "k4"], cfg="other")
    _run(out, "night-3", ["k9"], success=False)  # stopped between its ledger file and _SUCCESS: not trusted
    assert _keys(out) == _by_results(out) == {"k1", "k2", "k3"} and "bad-night-1" not in _keys(out)
    assert _keys(out, "other") == _by_results(out, "other") == {"k3", "k4"}

    (Path(ledger_dir(out)) / "night-1.parquet").unlink()  # an entry lost (or a run older than the ledger)
    assert _keys(out) == {"k1", "k2", "k3"} and (Path(ledger_dir(out)) / "night-1.parquet").exists()
    for p in Path(ledger_dir(out)).iterdir():  # a prefix written before the ledger existed
        p.unlink()
    assert _keys(out) == {"k1", "k2", "k3"} and _keys(out, "other") == {"k3", "k4"}

    monkeypatch.setattr(ledger, "COMPACT_AT", 3)
    _run(out, "night-4", ["k5"])
    assert _keys(out) == _by_results(out) == {"k1", "k2", "k3", "k5"}
    files = [p.name for p in Path(ledger_dir(out)).iterdir()]
    assert len(files) == 1 and files[0].startswith("compact-")  # many per-run files became one
    _run(out, "night-5", ["k6"])
    assert _keys(out) == {"k1", "k2", "k3", "k5", "k6"}
    for p in (tmp_path / "out" / "night-4").iterdir():  # a run the user deleted no longer counts
        p.unlink() if p.is_file() else None
    (tmp_path / "out" / "night-4" / "_SUCCESS").unlink(missing_ok=True)
    assert _keys(out) == _by_results(out) == {"k1", "k2", "k3", "k6"}
