"""Which prior scores which image: one model directory, or a models root of ``<category>/model/``.

``--model`` names either a model directory (``mdps.json`` in it: every image is scored by it) or a
models root as ``mdps train --categories`` writes it (``<root>/<category>/model/``). With a root, one
job scores many categories: the data is a folder of ``<category>/`` sub-folders (each listed in its
own layout), a manifest with a ``category`` column, or one category's folder; each image is scored
by its category's prior, and an image whose category has no model becomes an error row that names
the model it expected. Ray-free, like the rest of the run policy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mdps_ray.config.jobs import ScoreJobConfig
from mdps_ray.config.method import ConfigError, MdpsConfig, scoring_hash
from mdps_ray.data.manifest import build_manifest
from mdps_ray.data.records import ImageRecord, detect_layout, list_records
from mdps_ray.method.calibration import Calibration
from mdps_ray.storage.promotion import POINTER, resolve_model
from mdps_ray.storage.results import rows_to_table
from mdps_ray.storage.uris import exists, fresh, join


@dataclass(frozen=True)
class CategoryModel:
    """One prior as the job will use it: where it is, its settings, digest, config hash and calibration."""

    uri: str
    cfg: MdpsConfig
    digest: str
    cfg_hash: str
    calibration: Calibration | None


@dataclass(frozen=True)
class ModelSet:
    """The job's priors: ``{None: model}`` for one model directory, ``{category: model}`` for a models root."""

    root: str
    by_category: dict[str | None, CategoryModel]

    @property
    def single(self) -> bool:
        return None in self.by_category

    @property
    def categories(self) -> list[str]:
        return sorted(c for c in self.by_category if c is not None)

    def model_for(self, category: str) -> CategoryModel | None:
        return self.by_category.get(None) or self.by_category.get(category)

    def expected_uri(self, category: str) -> str:
        return join(self.root, category, "model")

    @property
    def first(self) -> CategoryModel:
        return next(iter(self.by_category.values()))

    def on_device(self, device_kind: str) -> ModelSet:
        """The same models with each config hash as rows scored on ``device_kind`` carry it (scoring_hash)."""
        return replace(self, by_category={c: replace(m, cfg_hash=scoring_hash(m.cfg_hash, device_kind))
                                          for c, m in self.by_category.items()})

    @property
    def digest(self) -> str:
        """The model digest (one model), or a digest of every category's."""
        return self.first.digest if self.single else _combined({c: m.digest for c, m in self.by_category.items()})

    @property
    def cfg_hash(self) -> str:
        return self.first.cfg_hash if self.single else _combined({c: m.cfg_hash for c, m in self.by_category.items()})

    def describe(self) -> dict[str, Any]:
        """What run.json records of the priors."""
        return {str(c or "*"): {"model": m.uri, "model_digest": m.digest, "config_hash": m.cfg_hash}
                for c, m in sorted(self.by_category.items(), key=lambda kv: str(kv[0]))}


def _combined(parts: dict[Any, str]) -> str:
    return hashlib.sha256("\n".join(f"{k}:{v}" for k, v in sorted(parts.items())).encode()).hexdigest()[:16]


def model_categories(uri: str, storage_options: dict[str, Any] | None = None) -> list[str] | None:
    """The categories of a models root (sub-folders with ``model/mdps.json``); None for a model directory
    or a folder with neither (reading it as a model then says what was expected)."""
    if exists(join(uri, "mdps.json"), storage_options) or exists(join(uri, POINTER), storage_options):
        return None
    fs, path = fresh(uri, storage_options)
    if not fs.isdir(path):
        return None
    subs = sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(path, detail=True)
                  if e.get("type") == "directory")
    base = path.rstrip("/")
    found = [c for c in subs if any(fs.exists(f"{base}/{c}/model/{name}") for name in ("mdps.json", POINTER))]
    return found or None


def load_models(job: ScoreJobConfig, load: Any) -> ModelSet:
    """The job's priors; ``load(job)`` gives (config, digest, calibration) of ``job.model`` (score_plan). A promoted
    model is resolved here, once: the actors get the version it named when the job started."""
    categories = model_categories(job.model, job.storage_options)
    if categories is None:
        uri = resolve_model(job.model, job.storage_options)
        cfg, digest, cal = load(job.model_copy(update={"model": uri}))
        return ModelSet(job.model, {None: CategoryModel(uri, cfg, digest, cfg.digest(), cal)})
    models: dict[str | None, CategoryModel] = {}
    for c in categories:
        uri = resolve_model(join(job.model, c, "model"), job.storage_options)
        cfg, digest, cal = load(job.model_copy(update={"model": uri}))
        models[c] = CategoryModel(uri, cfg, digest, cfg.digest(), cal)
    grids = {(m.cfg.read_size, m.cfg.maps.crop) for m in models.values()}
    if len(grids) > 1:
        raise ConfigError(f"expected one prior image size and map crop across the models under {job.model}, got "
                          f"{sorted(grids, key=str)}; score categories with different priors in separate jobs")
    if any(m.cfg.sampler.mask.mode == "transductive" for m in models.values()):
        raise ConfigError(f"expected a calibrated or fixed stage-1 mask with a models root ({job.model}), got "
                          "sampler.mask.mode=transductive; score each category in its own job")
    return ModelSet(job.model, models)


def list_for_models(job: ScoreJobConfig, models: ModelSet) -> list[ImageRecord]:
    """The records a job scores: its data as one dataset (one model, a manifest, or one category's folder),
    or, under a models root, every ``<category>/`` sub-folder of the data, each in its own layout."""
    so = job.storage_options
    if models.single or job.data.endswith((".parquet", ".csv")):
        return list_records(job.data, job.layout, job.split, so)
    fs, path = fresh(job.data, so)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    subs = sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(path, detail=True)
                  if e.get("type") == "directory")
    if name in models.categories or not set(subs) & set(models.categories):
        return list_records(job.data, job.layout, job.split, so)  # one category's folder
    records: list[ImageRecord] = []
    for c in subs:
        uri = join(job.data, c)
        layout = detect_layout(uri, so) if job.layout == "auto" else job.layout
        if layout == "mvtec" and not fs.isdir(f"{path.rstrip('/')}/{c}/{job.split}"):
            continue  # a category without this split
        records += list_records(uri, layout, job.split, so)
    return records


def list_manifest_for(job: ScoreJobConfig, models: ModelSet) -> pa.Table:
    """List the dataset once: every image with its content key (data/manifest.py)."""
    return build_manifest(list_for_models(job, models), job.storage_options)


def unmodelled(manifest: pa.Table, models: ModelSet) -> pa.Table:
    """Manifest rows whose category has no model under the models root."""
    if models.single:
        return manifest.slice(0, 0)
    known = pa.array(models.categories, type=pa.string())
    return manifest.filter(pc.invert(pc.is_in(manifest.column("category"), value_set=known)))


def unmodelled_rows(rows: pa.Table, models: ModelSet, run_id: str, dt: str | None) -> pa.Table:
    """Error rows for images whose category has no model, each naming the model it expected."""
    out = []
    for r in rows.to_pylist():  # only the unmodelled rows, a small table
        out.append({**{k: r.get(k) for k in ("image_id", "uri", "category", "split", "defect_type", "label",
                                              "content_key", "mask_uri")},
                    "split": r.get("split") or None, "defect_type": r.get("defect_type") or None,
                    "run_id": run_id, "dt": dt, "status": "error",
                    "error": f"no model for category {r['category']!r}: expected "
                             f"{models.expected_uri(str(r['category']))}/mdps.json (train it with "
                             f"`mdps train --categories {r['category']}`)"})
    return rows_to_table(out)
