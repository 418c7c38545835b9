"""The run directory and how a run is committed.

    <out>/<run_id>/run.json  manifest.parquet  results/  errors/  maps/  metrics.json  _SUCCESS
    <out>/<run_id>/_staging/part-*.parquet     (while the run is in progress)
    <out>/_ledger/                             (what every committed run scored: storage/ledger.py)

The life of a run, in order:
  1. stage: each scored batch writes one part under ``_staging/``, named by its image ids
     (:func:`~mdps_ray.storage.results.part_name`), so a retried batch rewrites the same file;
     and its maps as one chunk ``maps/part-*.npz`` (storage/maps.py), written before the part;
  2. resume: :func:`staged_rows` reads every part back (in parallel), one row per image (:func:`dedup`);
  3. :func:`commit`: ``results/<category>/[<dt>/]part-NNNNN.parquet`` (at most :data:`PART_ROWS` rows
     each) and ``errors/`` from those rows (the pipeline writes the run's ledger file after it:
     storage/ledger.py);
  4. :func:`finalize`: ``metrics.json``, ``run.json``, then ``_SUCCESS`` last, then ``_staging/`` removed.
Readers trust a run only once ``_SUCCESS`` exists (:func:`committed_runs`).
"""

from __future__ import annotations

import hashlib
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from mdps_ray.storage.results import RESULT_SCHEMA, check_schema, read_table, table_bytes, upgrade
from mdps_ray.storage.uris import exists, fresh, join, list_files, remove, write_bytes, write_json


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

    def chunk_uri(self, part: str) -> str:
        """The maps chunk of the staged part named ``part`` (storage/maps.py)."""
        return join(self.root, "maps", part.removesuffix(".parquet") + ".npz")

    def recon_uri(self, image_id: str) -> str:
        """Where runs written before map chunks kept an image's reconstruction (8-bit PNG)."""
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


# Rows per committed result file: a partition of 10⁶ rows is ten files a reader can take in parallel.
PART_ROWS = 100_000
# Concurrent reads of staged parts: S3 GETs are latency-bound, so the commit keeps many in flight.
READ_THREADS = 16


def read_tables(uris: list[str], storage_options: dict[str, Any] | None = None,
                columns: list[str] | None = None) -> list[pa.Table]:
    """Parquet objects read concurrently (in ``uris`` order), each upgraded to the current schema."""
    def one(uri: str) -> pa.Table:
        table = upgrade(read_table(uri, storage_options))
        return table.select(columns) if columns else table

    if len(uris) <= 1:
        return [one(u) for u in uris]
    with ThreadPoolExecutor(min(READ_THREADS, len(uris))) as pool:
        return list(pool.map(one, uris))


# Staged parts read per group before their chunks are combined: a part is one batch (8 rows), and Arrow keeps
# about 1 KB of buffers per column chunk, so 10⁵ parts held as they were read cost ~0.5 GB for 30 MB of rows.
GROUP = 512


def staged_rows(paths: RunPaths, storage_options: dict[str, Any] | None = None,
                columns: list[str] | None = None) -> pa.Table:
    """All staged rows of a run (all columns, or ``columns`` with image_id and status among them), one per
    image id (a retried batch may have written a part twice)."""
    uris = list_files(paths.staging, ".parquet", storage_options)
    groups = [_read_healing(paths, uris[g:g + GROUP], storage_options, columns) for g in range(0, len(uris), GROUP)]
    groups = [t for t in groups if t is not None]
    if not groups:
        empty = RESULT_SCHEMA.empty_table()
        return empty.select(columns) if columns else empty
    table = pa.concat_tables(groups)
    if columns is None:
        check_schema(table)
    return dedup(table)


def _read_healing(paths: RunPaths, uris: list[str], storage_options: dict[str, Any] | None,
                  columns: list[str] | None) -> pa.Table | None:
    """:func:`_read_group`, except that a part that is not readable Parquet (torn by another copy, a bad sync) is
    moved aside to ``_quarantine/`` with a one-line warning, so its images are scored again by this attempt; None
    when no part of the group could be read."""
    try:
        return _read_group(uris, storage_options, columns)
    except pa.ArrowInvalid:
        pass
    good = []
    for uri in uris:
        try:
            good.append(_read_group([uri], storage_options, columns))
        except pa.ArrowInvalid as err:
            quarantine(paths, uri, str(err).splitlines()[0], storage_options)
    return pa.concat_tables(good) if good else None


def quarantine(paths: RunPaths, uri: str, reason: str, storage_options: dict[str, Any] | None = None) -> str:
    """Move a staged part that cannot be read to ``<run>/_quarantine/<name>.bad`` (out of every listing of
    parts) and say so in one line; returns where it went."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    target = join(paths.root, "_quarantine", f"{name}.bad")
    fs, src = fresh(uri, storage_options)
    _, dst = fresh(target, storage_options)
    fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
    fs.mv(src, dst)
    print(f"mdps: warning: staged part {name} of run {paths.run_id} could not be read ({reason}); moved to "
          f"{target}, its images are scored again", file=sys.stderr, flush=True)
    return target


def _read_group(uris: list[str], storage_options: dict[str, Any] | None, columns: list[str] | None) -> pa.Table:
    """Staged parts (all of the current schema: a resume of another schema version is refused) as one
    table with contiguous columns: local files through Arrow's own threaded reader, others concurrently."""
    if all("://" not in u or u.startswith("file://") for u in uris):
        schema = RESULT_SCHEMA if columns is None else pa.schema([RESULT_SCHEMA.field(c) for c in columns])
        paths = [u.removeprefix("file://") for u in uris]
        table = pads.dataset(paths, format="parquet", schema=schema, filesystem=pafs.LocalFileSystem()).to_table()
    else:
        table = pa.concat_tables([t.replace_schema_metadata(RESULT_SCHEMA.metadata)
                                  for t in read_tables(uris, storage_options, columns)])
    return table.combine_chunks().replace_schema_metadata(RESULT_SCHEMA.metadata)


def dedup(table: pa.Table) -> pa.Table:
    """Keep one row per image id: its first ``ok`` row, else its first row (an error row that a resume
    retried successfully gives way to the scored row). Arrow sorts; no Python object per row."""
    if table.num_rows == 0:
        return table
    keyed = pa.table({"id": table.column("image_id"),
                      "failed": pc.not_equal(table.column("status"), "ok").cast(pa.int8()),
                      "pos": pa.array(range(table.num_rows), type=pa.int64())})
    order = pc.sort_indices(keyed, [("id", "ascending"), ("failed", "ascending"), ("pos", "ascending")])
    ids = pc.take(keyed.column("id"), order).combine_chunks()
    starts = pa.concat_arrays([pa.array([True]), pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1))])
    kept = pc.filter(pc.take(keyed.column("pos"), order).combine_chunks(), starts)
    return table.take(pc.take(kept, pc.array_sort_indices(kept)))


def commit(paths: RunPaths, table: pa.Table, storage_options: dict[str, Any] | None = None) -> None:
    """Write results/<category>/[<dt>/]part-NNNNN.parquet and errors/ from the staged rows."""
    check_schema(table)
    ok = table.filter(pc.equal(table.column("status"), "ok"))
    bad = table.filter(pc.equal(table.column("status"), "error"))
    for category in pc.unique(ok.column("category")).to_pylist():
        part = ok.filter(pc.equal(ok.column("category"), category))
        for dt in pc.unique(part.column("dt")).to_pylist():
            rows = part.filter(pc.is_null(part.column("dt")) if dt is None else pc.equal(part.column("dt"), dt))
            # Plain folder names, not hive ``key=value``: category and dt are columns of every file, and a
            # hive folder of the same name makes pandas/pyarrow refuse the dataset (two sources of one column).
            sub = object_key(category) + ("" if dt is None else f"/{object_key(dt)}")
            _write_parts(join(paths.results, sub), rows.sort_by("image_id"), storage_options)
    if bad.num_rows:
        _write_parts(paths.errors, bad.sort_by("image_id"), storage_options)


def _write_parts(folder: str, rows: pa.Table, storage_options: dict[str, Any] | None) -> None:
    """``rows`` as ``part-00000.parquet``, ``part-00001.parquet``, … of at most :data:`PART_ROWS` rows each."""
    starts = range(0, max(rows.num_rows, 1), PART_ROWS)
    with ThreadPoolExecutor(min(4, len(starts))) as pool:
        list(pool.map(lambda k_s: write_bytes(join(folder, f"part-{k_s[0]:05d}.parquet"),
                                              table_bytes(rows.slice(k_s[1], PART_ROWS)), storage_options),
                      enumerate(starts)))


def finalize(paths: RunPaths, metrics: dict[str, Any], record: dict[str, Any],
             storage_options: dict[str, Any] | None = None) -> None:
    """Write metrics.json and run.json, then the ``_SUCCESS`` marker (last), then drop the staging area."""
    write_json(paths.metrics, metrics, storage_options)
    write_json(paths.run_json, record, storage_options)
    write_bytes(paths.success, b"", storage_options)
    remove(paths.staging, storage_options)


def committed_run(run_dir: str, storage_options: dict[str, Any] | None = None) -> RunPaths:
    """The paths of the committed run at ``run_dir`` (``<out>/<run_id>``); one line when it has no ``_SUCCESS``."""
    out, _, run_id = run_dir.rstrip("/").rpartition("/")
    paths = RunPaths(out, run_id)
    if not exists(paths.success, storage_options):
        raise FileNotFoundError(f"expected a committed run (with _SUCCESS) at {run_dir}, found none")
    return paths


def committed_runs(out: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Run ids under ``out`` that carry ``_SUCCESS`` (folders named ``_…`` hold no runs: ``_ledger``);
    the markers are looked up concurrently (one request each on S3)."""
    fs, path = fresh(out, storage_options)
    if not fs.exists(path):
        return []
    subs = [s.rstrip("/") for s in sorted(fs.ls(path, detail=False))]
    subs = [s for s in subs if not s.rsplit("/", 1)[-1].startswith("_")]
    with ThreadPoolExecutor(min(READ_THREADS, max(1, len(subs)))) as pool:
        marked = list(pool.map(lambda s: fs.exists(f"{s}/_SUCCESS"), subs))
    return [s.rsplit("/", 1)[-1] for s, ok in zip(subs, marked, strict=True) if ok]


def read_results(paths: RunPaths, storage_options: dict[str, Any] | None = None, errors: bool = False,
                 columns: list[str] | None = None) -> pa.Table:
    """The committed rows of a run (results/, or errors/), all columns or ``columns``."""
    tables = read_tables(list_files(paths.errors if errors else paths.results, ".parquet", storage_options),
                         storage_options, columns)
    empty = RESULT_SCHEMA.empty_table()
    return pa.concat_tables(tables) if tables else (empty.select(columns) if columns else empty)
