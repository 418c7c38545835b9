"""The run directory and how a run is committed.

    <out>/<run_id>/run.json  manifest.parquet  results/  errors/  maps/  metrics.json  _SUCCESS
    <out>/<run_id>/_staging/part-*.parquet     (while the run is in progress)

The life of a run, in order:
  1. stage: each scored batch writes one part under ``_staging/``, named by its image ids
     (:func:`~mdps_ray.storage.results.part_name`), so a retried batch rewrites the same file;
  2. resume: :func:`staged_rows` reads every part back, one row per image (:func:`dedup`);
  3. :func:`commit`: ``results/<category>/[<dt>/]part-00000.parquet`` and ``errors/`` from those rows;
  4. :func:`finalize`: ``metrics.json``, ``run.json``, then ``_SUCCESS`` last, then ``_staging/`` removed.
Readers trust a run only once ``_SUCCESS`` exists (:func:`committed_runs`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mdps_ray.storage.results import RESULT_SCHEMA, check_schema, read_table, table_bytes, upgrade
from mdps_ray.storage.uris import fresh, join, list_files, remove, write_bytes, write_json


@dataclass(frozen=True)
class RunPaths:
    """URIs of one run's files."""

    out: str
    run_id: str

    @property
    def root(self) -> str:
        return join(self.out, self.run_id)

    def _file(self, name: str) -> str:
        return join(self.root, name)

    run_json = property(lambda self: self._file("run.json"))
    manifest = property(lambda self: self._file("manifest.parquet"))
    metrics = property(lambda self: self._file("metrics.json"))
    success = property(lambda self: self._file("_SUCCESS"))
    staging = property(lambda self: self._file("_staging"))
    results = property(lambda self: self._file("results"))
    errors = property(lambda self: self._file("errors"))

    def map_uri(self, image_id: str) -> str:
        return join(self.root, "maps", f"{object_key(image_id)}.npy")

    def recon_uri(self, image_id: str) -> str:
        """The mean posterior sample of an image, as 8-bit PNG (for reports)."""
        return join(self.root, "recons", f"{object_key(image_id)}.png")


_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def object_key(name: str) -> str:
    """One path segment for a name that comes from the data (an image id, a category).

    A plain name (letters, digits, ``._-``, no ``..``) is kept as it is; anything else (separators,
    ``..``, absolute paths, spaces, unicode) becomes a readable stem plus ``~`` and a hash of the whole
    name. So no name can leave its folder, and two different names never share a key (plain keys have
    no ``~``; hashed keys differ by their hash).
    """
    if _SAFE.fullmatch(name) and ".." not in name:
        return name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:60]
    return f"{stem}~{hashlib.sha256(name.encode()).hexdigest()[:20]}"


def staged_rows(paths: RunPaths, storage_options: dict[str, Any] | None = None) -> pa.Table:
    """All staged rows of a run, one per image id (a retried batch may have written a part twice)."""
    parts = [upgrade(read_table(u, storage_options))
             for u in list_files(paths.staging, ".parquet", storage_options)]
    if not parts:
        return RESULT_SCHEMA.empty_table()
    table = pa.concat_tables(parts)
    check_schema(table)
    return dedup(table)


def dedup(table: pa.Table) -> pa.Table:
    """Keep one row per image id: its first ``ok`` row, else its first row (an error row that a resume
    retried successfully gives way to the scored row)."""
    ids = table.column("image_id").to_pylist()
    failed = pc.not_equal(table.column("status"), "ok").to_pylist()
    order = sorted(range(len(ids)), key=lambda i: bool(failed[i]))  # stable: ok rows first, then by position
    seen: set[str] = set()
    keep = sorted(i for i in order if not (ids[i] in seen or seen.add(ids[i])))  # type: ignore[func-returns-value]
    return table.take(pa.array(keep, type=pa.int64()))


def commit(paths: RunPaths, table: pa.Table, storage_options: dict[str, Any] | None = None) -> None:
    """Write results/<category>/[<dt>/]part-00000.parquet and errors/ from the staged rows."""
    check_schema(table)
    ok = table.filter(pc.equal(table.column("status"), "ok"))
    bad = table.filter(pc.equal(table.column("status"), "error"))
    for category in sorted(set(ok.column("category").to_pylist())):
        part = ok.filter(pc.equal(ok.column("category"), category))
        for dt in sorted({d for d in part.column("dt").to_pylist()}, key=str):
            rows = part.filter(pc.is_null(part.column("dt")) if dt is None else pc.equal(part.column("dt"), dt))
            # Plain folder names, not hive ``key=value``: category and dt are columns of every file, and a
            # hive folder of the same name makes pandas/pyarrow refuse the dataset (two sources of one column).
            sub = object_key(category) + ("" if dt is None else f"/{object_key(dt)}")
            rows = rows.sort_by("image_id")
            write_bytes(join(paths.results, sub, "part-00000.parquet"), table_bytes(rows), storage_options)
    if bad.num_rows:
        write_bytes(join(paths.errors, "part-00000.parquet"), table_bytes(bad.sort_by("image_id")), storage_options)


def finalize(paths: RunPaths, metrics: dict[str, Any], record: dict[str, Any],
             storage_options: dict[str, Any] | None = None) -> None:
    """Write metrics.json and run.json, then the ``_SUCCESS`` marker (last), then drop the staging area."""
    write_json(paths.metrics, metrics, storage_options)
    write_json(paths.run_json, record, storage_options)
    write_bytes(paths.success, b"", storage_options)
    remove(paths.staging, storage_options)


def committed_runs(out: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Run ids under ``out`` that carry ``_SUCCESS``."""
    fs, path = fresh(out, storage_options)
    if not fs.exists(path):
        return []
    runs = []
    for sub in sorted(fs.ls(path, detail=False)):
        name = sub.rstrip("/").rsplit("/", 1)[-1]
        if fs.exists(f"{sub.rstrip('/')}/_SUCCESS"):
            runs.append(name)
    return runs


def read_results(paths: RunPaths, storage_options: dict[str, Any] | None = None, errors: bool = False) -> pa.Table:
    """The committed rows of a run (results/, or errors/)."""
    tables = [upgrade(read_table(u, storage_options))
              for u in list_files(paths.errors if errors else paths.results, ".parquet", storage_options)]
    return pa.concat_tables(tables) if tables else RESULT_SCHEMA.empty_table()
