"""Job configurations (frozen pydantic v2): what `mdps score` / `jobs/score.py`, `mdps train` / `jobs/train.py`
and the run readers (`evaluate`, `report`, `runs`) accept.

``--set`` keys whose first part is a section of :class:`~mdps_ray.config.method.MdpsConfig` (prior, train,
sampler, maps, score, runtime, tiling) override the method (at scoring time, the model's stored one); the
others set the job.
"""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from mdps_ray.config.method import _Frozen

SECRET_KEYS = ("key", "secret", "token", "password", "credential")


def _credentials_are_text(options: dict[str, Any]) -> dict[str, Any]:
    """A credential given as a list or a mapping (a YAML slip) is refused here, in one line that never shows it,
    instead of deep inside the filesystem client."""
    for name, value in options.items():
        if any(s in name.lower() for s in SECRET_KEYS) and value is not None and not isinstance(value, str):
            raise ValueError(f"expected storage_options.{name} to be text, got a {type(value).__name__}")
    return options


def _calendar_day(value: str | None) -> str | None:
    if value is not None:
        try:
            _dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError("expected a calendar day YYYY-MM-DD") from None
    return value


StorageOptions = Annotated[dict[str, Any], AfterValidator(_credentials_are_text)]


class ScoreJobConfig(_Frozen):
    """Batch scoring of an image dataset with a trained prior."""

    model: str = Field(description="Model directory URI (unet/, mdps.json, calibration.json), or a models root "
                       "holding <category>/model/ (as `mdps train --categories` writes it): each image is scored by "
                       "its category's prior, and data is then a folder of <category>/ sub-folders or a manifest "
                       "with a category column.")
    data: str = Field(description="Dataset URI: MVTec/BTAD root, a folder of images, or a manifest file.")
    out: str = Field(description="Output prefix; the run writes under <out>/<run_id>/.")
    run_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                               description="Run id (letters, digits, ._-); default: derived from data, model and "
                                           "config.")
    split: str = Field("test", description="Split folder for MVTec/BTAD layouts.")
    layout: Literal["auto", "mvtec", "folder", "manifest"] = Field("auto", description="Dataset layout.")
    incremental: bool = Field(False, description="Score only images not yet scored under <out> (nightly).")
    date: Annotated[str | None, AfterValidator(_calendar_day)] = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$",
                             description="dt of a nightly run (YYYY-MM-DD; results/<category>/<dt>/); "
                             "default today (UTC).")
    restart: bool = Field(False, description="Discard what an earlier attempt of this run id staged and start "
                          "it again (a resume with another model or config is refused without it).")
    lease_seconds: float = Field(120.0, ge=5, description="The run's one-writer lease: renewed every third of "
                                 "this; a lease not renewed for this long is taken over.")
    batch_size: int | None = Field(None, ge=1, description=(
        "Images per scoring call of an actor. Default: 8 on CPU; on a GPU enough images for >= 32 sampled rows "
        "(images x n), each actor then scoring them in chunks that fit its free memory, halved on out-of-memory "
        "(method/batching.py)."))
    num_actors: int | None = Field(None, ge=1, description="Scoring actors; default: GPUs, else what CPUs allow.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description=(
        "Actor device; auto = cuda when the cluster has GPUs as the job starts (an autoscaling cluster whose GPU "
        "nodes are not up yet scores on CPU and says so in one line: set cuda to wait for them)."))
    gpu_wait_seconds: float = Field(900.0, ge=0, description="With device=cuda on a joined cluster: how long to "
                                    "wait for the autoscaler to bring up the GPUs requested.")
    max_error_fraction: float = Field(0.1, ge=0, le=1, description="Fail the run past this fraction of bad inputs.")
    max_pixels: int = Field(50_000_000, ge=1, description="Refuse images whose header claims more pixels.")
    write_maps: bool = Field(True, description="Write anomaly maps and reconstructions (one .npz per batch) "
                             "under maps/.")
    async_uploads: bool | None = Field(None, description="Upload a batch's maps and staged part in a background "
                                       "thread while the actor scores the next batch; default (null): on GPU "
                                       "actors, off on CPU ones, where the upload thread only competes with "
                                       "scoring for the cores.")
    reduce_shard_rows: int = Field(1000, ge=1, description="Rows per reduce task; a run of one shard is reduced "
                                   "in the driver.")
    storage_options: StorageOptions = Field(default_factory=dict, description="fsspec options (never logged).")
    method: dict[str, Any] = Field(default_factory=dict, description="Method overrides: nested sections or "
                                   "dotted keys, deep-merged into the model's stored config.")

    def method_patch(self) -> dict[str, Any]:
        """The ``method:`` section as a patch for :func:`~mdps_ray.config.overrides.apply_overrides`."""
        return dict(self.method)

    def redacted(self) -> dict[str, Any]:
        """The config as JSON with every credential-looking storage option replaced."""
        data = self.model_dump(mode="json")
        data["storage_options"] = _redact(data["storage_options"])
        return data


class RunAccessConfig(_Frozen):
    """Reading committed runs back (`mdps evaluate`, `mdps report`, `mdps runs`)."""

    storage_options: StorageOptions = Field(default_factory=dict, description="fsspec options (never logged).")


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "***" if any(s in k.lower() for s in SECRET_KEYS) else _redact(v) for k, v in value.items()}
    return value


class TrainJobConfig(_Frozen):
    """Distributed training of one prior per category, then calibration."""

    data: str = Field(description="Category root (MVTec/BTAD layout or a folder of normal images), or a parent "
                                  "of several categories with --categories.")
    out: str = Field(description="Output URI: <out>/model (one category) or <out>/<category>/model.")
    categories: list[str] | None = Field(None, description="Sub-folders of data to train, one prior each.")
    split: str = Field("train", description="Split folder of the normal training images.")
    layout: Literal["auto", "mvtec", "folder", "manifest"] = Field("auto", description="Dataset layout.")
    preset: str = Field("default", description="Method preset the overrides apply to.")
    method: dict[str, Any] = Field(default_factory=dict, description="Method overrides: nested sections or "
                                   "dotted keys, deep-merged into the model's stored config.")
    max_minutes: float | None = Field(
        None, gt=0, description="Wall-clock budget per category, counted from the category's start (listing, "
                                "checks, Ray start, training); the calibration that follows is not in it.")
    max_steps: int = Field(2000, ge=1, description="Optimiser steps per category.")
    num_workers: int = Field(1, ge=1, description="Data-parallel workers (DDP; gloo on CPU, NCCL on GPU).")
    use_gpu: bool = Field(False, description="One GPU per worker.")
    checkpoint_every: int = Field(200, ge=1, description="Checkpoint every K steps.")
    keep_checkpoints: int = Field(2, ge=1, description="Keep the last M checkpoints.")
    max_failures: int = Field(1, ge=0, description="Worker-group restarts from the last checkpoint.")
    holdout_fraction: float = Field(0.1, gt=0, lt=1, description="Normal images held out for calibration.")
    target_fpr: float = Field(0.01, gt=0, lt=1, description=(
        "False-alarm rate the image threshold certifies on normals (needs >= 1/rate - 1 held-out normals; with "
        "fewer it certifies 1/(n + 1) and says so)."))
    calibrate: bool = Field(True, description="Write calibration.json after training.")
    calibrate_where: Literal["auto", "driver", "cluster"] = Field(
        "auto", description="Where calibration runs: cluster = a Ray task with the training's device and a "
                            "worker's resources (auto: when use_gpu, so a small head node never holds the "
                            "256-px autograd graphs), driver = in this process; the driver only writes the file.")
    run_name: str | None = Field(None, description="Ray Train run name (resume key); default from out and category.")
    storage_options: StorageOptions = Field(default_factory=dict, description="fsspec options (never logged).")

    def redacted(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["storage_options"] = _redact(data["storage_options"])
        return data
