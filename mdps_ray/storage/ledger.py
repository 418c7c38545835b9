"""The ledger: what every committed run under an output prefix scored, kept small for the nightly plan.

    <out>/_ledger/<run_id>.parquet        one per committed run (content_key, model_digest, config_hash, run_id)
    <out>/_ledger/compact-<digest>.parquet many runs' entries merged, once there are COMPACT_AT files

A run writes its file in its commit step, after its results and before ``_SUCCESS``. Entries count
only for runs that carry ``_SUCCESS`` (a run stopped between its ledger file and its marker is not
trusted), and a committed run without an entry (written before the ledger, or whose entry was lost)
is read back from its results and its entry rewritten. So the nightly skip reads a few files of four
columns instead of every run's full results: its cost follows the ledger's size, not the archive's
history of result files.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mdps_ray.storage.results import table_bytes
from mdps_ray.storage.runs import RunPaths, committed_runs, read_results, read_tables
from mdps_ray.storage.uris import join, list_files, remove, write_bytes

LEDGER_SCHEMA = pa.schema([("content_key", pa.string()), ("model_digest", pa.string()),
                           ("config_hash", pa.string()), ("run_id", pa.string())])
# Per-run files merged into one once there are this many (a year of nightly runs is a few files).
COMPACT_AT = 32
_COMPACT = "compact-"


def ledger_dir(out: str) -> str:
    return join(out, "_ledger")


def entries_of(results: pa.Table, run_id: str) -> pa.Table:
    """A run's ledger entries from its result rows (status ok)."""
    ok = results.filter(pc.equal(results.column("status"), "ok")) if "status" in results.column_names else results
    return pa.table({"content_key": ok.column("content_key"), "model_digest": ok.column("model_digest"),
                     "config_hash": ok.column("config_hash"),
                     "run_id": pa.array([run_id] * ok.num_rows, type=pa.string())}, schema=LEDGER_SCHEMA)


def write_entry(paths: RunPaths, results: pa.Table, storage_options: dict[str, Any] | None = None) -> None:
    """The run's ledger file (called by the commit step, before ``_SUCCESS``)."""
    write_bytes(join(ledger_dir(paths.out), f"{paths.run_id}.parquet"),
                table_bytes(entries_of(results, paths.run_id)), storage_options)


def read_ledger(out: str, storage_options: dict[str, Any] | None = None) -> pa.Table:
    """Entries of every committed run under ``out``: from the ledger, rebuilt where it lacks a run; compacted
    when it has many files."""
    committed = committed_runs(out, storage_options)
    files = list_files(ledger_dir(out), ".parquet", storage_options)
    stem = {u: u.rsplit("/", 1)[-1].removesuffix(".parquet") for u in files}
    per_run = [u for u in files if not stem[u].startswith(_COMPACT) and stem[u] in set(committed)]
    compact = [u for u in files if stem[u].startswith(_COMPACT)]
    tables = [t.cast(LEDGER_SCHEMA) for t in read_tables(per_run + compact, storage_options)]
    table = pa.concat_tables(tables) if tables else LEDGER_SCHEMA.empty_table()
    table = table.filter(pc.is_in(table.column("run_id"), value_set=pa.array(committed, type=pa.string())))
    covered = set(pc.unique(table.column("run_id")).to_pylist())
    for run_id in (r for r in committed if r not in covered):  # before the ledger, or its file lost
        paths = RunPaths(out, run_id)
        rebuilt = entries_of(read_results(paths, storage_options), run_id)
        write_entry(paths, rebuilt, storage_options)
        table = pa.concat_tables([table, rebuilt])
    if len(per_run) + len(compact) >= COMPACT_AT:
        _compact(out, table, per_run + compact, storage_options)
    return table


def _compact(out: str, table: pa.Table, merged: list[str], storage_options: dict[str, Any] | None) -> None:
    """One file with ``table`` (entries of committed runs), then the files it replaces removed."""
    runs = sorted(set(pc.unique(table.column("run_id")).to_pylist()))
    name = _COMPACT + hashlib.sha256("\n".join(runs).encode()).hexdigest()[:16] + ".parquet"
    target = join(ledger_dir(out), name)
    write_bytes(target, table_bytes(table), storage_options)
    for uri in merged:
        if uri.rsplit("/", 1)[-1] != name:
            remove(uri, storage_options)


def scored_keys(out: str, model_digest: str, config_hash: str, storage_options: dict[str, Any] | None = None,
                table: pa.Table | None = None) -> pa.Array:
    """Content keys that a committed run under ``out`` scored with this model and config (from ``table``,
    the :func:`read_ledger` of ``out``, when the caller read it already)."""
    table = read_ledger(out, storage_options) if table is None else table
    same = pc.and_(pc.equal(table.column("model_digest"), model_digest),
                   pc.equal(table.column("config_hash"), config_hash))
    return pc.unique(table.filter(same).column("content_key").combine_chunks())

