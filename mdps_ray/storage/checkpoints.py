"""Checkpoints: the prior in the diffusers layout (safetensors only), config and calibration JSON.

Layout of a model directory (local path or any fsspec URI)::

    <model>/unet/config.json
    <model>/unet/diffusion_pytorch_model.safetensors
    <model>/positions/<k>/unet/…  instead, with per-position priors: prior k (tile k of the grid), k = 0 … T − 1
    <model>/scheduler/scheduler_config.json
    <model>/mdps.json          the MdpsConfig the prior was trained with, and the weights digest
    <model>/calibration.json   thresholds fitted on held-out normal images (optional)

No pickle is ever loaded: a directory holding only ``.bin``/``.pt``/``.pth``/``.ckpt`` weights
is refused before anything is read.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffusers import UNet2DModel

from mdps_ray.config.method import MdpsConfig, upgrade_stored
from mdps_ray.config.overrides import validate
from mdps_ray.method.calibration import Calibration
from mdps_ray.method.positions import prior_count
from mdps_ray.models.prior import build_scheduler, prior_digest
from mdps_ray.storage.uris import exists, filesystem, join, read_bytes, write_bytes

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


class CheckpointError(ValueError):
    """A model location that cannot be loaded safely; one line saying why and what to do."""


@dataclass(frozen=True)
class LoadedPrior:
    """A prior read back from storage: ``unet`` is the UNet, or the T per-position UNets in tile order."""

    unet: UNet2DModel | list[UNet2DModel]
    config: MdpsConfig
    digest: str
    calibration: Calibration | None


def prior_dirs(config: MdpsConfig) -> list[str]:
    """The diffusers folders a model of ``config`` holds: ``unet``, or ``positions/<k>/unet`` per tile position."""
    if config.tiling.prior != "per_position":
        return ["unet"]
    return [f"positions/{k}/unet" for k in range(prior_count(config))]


def save_prior(unet: UNet2DModel | Sequence[UNet2DModel], config: MdpsConfig, uri: str,
               storage_options: dict[str, Any] | None = None) -> str:
    """Write the prior (or the per-position priors, in tile order) to ``uri``; returns the weights digest."""
    nets = [unet] if isinstance(unet, UNet2DModel) else list(unet)
    dirs = prior_dirs(config)
    if len(nets) != len(dirs):
        raise ValueError(f"expected {len(dirs)} prior(s) for this tiling, got {len(nets)}")
    digest = prior_digest(nets)
    with tempfile.TemporaryDirectory() as tmp:
        for net, folder in zip(nets, dirs, strict=True):
            net.save_pretrained(f"{tmp}/{folder}", safe_serialization=True)
        build_scheduler(config.prior).save_pretrained(f"{tmp}/scheduler")
        meta = {"config": config.model_dump(mode="json"), "weights_digest": digest}
        Path(tmp, "mdps.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        fs, path = filesystem(uri, storage_options)
        fs.makedirs(path, exist_ok=True)
        for local in sorted(Path(tmp).rglob("*")):
            if local.is_file():
                rel = local.relative_to(tmp).as_posix()
                write_bytes(join(uri, rel), local.read_bytes(), storage_options)
    return digest


def read_model_meta(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[dict[str, Any], MdpsConfig]:
    """``mdps.json`` of a model directory: its raw metadata and the validated config it was trained with."""
    fs, path = filesystem(uri, storage_options)
    if fs.isfile(path):
        raise CheckpointError(f"expected a model directory with mdps.json at {uri}, got a file; give the folder "
                              "`mdps train` wrote (<out>/model, or <out>/<category>/model with --categories)")
    try:
        raw = read_bytes(join(uri, "mdps.json"), storage_options)
    except FileNotFoundError:
        inner = join(uri, "model")
        hint = (f"did you mean {inner} (`mdps train --out X` writes the model to X/model)?"
                if exists(join(inner, "mdps.json"), storage_options) else
                "give <out>/model of `mdps train` (or <out>/<category>/model with --categories)")
        raise CheckpointError(f"expected a model directory with mdps.json at {uri}, found none; {hint}") from None
    try:
        meta = json.loads(raw)
        stored = meta["config"]
        if not isinstance(meta.get("weights_digest"), str):
            raise KeyError("weights_digest")
    except (ValueError, KeyError, TypeError) as err:
        what = f"no key {err}" if isinstance(err, KeyError) else str(err).splitlines()[0]
        raise CheckpointError(f"expected a readable {uri}/mdps.json, got: {what}; re-copy the model or retrain it") \
            from None
    config = validate(MdpsConfig, upgrade_stored(stored), source=f"{uri}/mdps.json")
    for folder in prior_dirs(config):  # here: the driver finds a model without weights, not an actor
        check_weights(uri, storage_options, folder)
    return meta, config


def check_weights(uri: str, storage_options: dict[str, Any] | None = None, folder: str = "unet") -> None:
    """Raise unless ``<uri>/<folder>`` holds safetensors weights (pickles are refused, not loaded)."""
    fs, path = filesystem(uri, storage_options)
    unet_dir = f"{path.rstrip('/')}/{folder}"
    if not fs.isdir(unet_dir):
        raise CheckpointError(f"expected a model directory with {folder}/ at {uri}, found none")
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(unet_dir, detail=False)]
    if WEIGHTS_NAME not in names:
        pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
        reason = f"only pickle weights ({', '.join(pickles)})" if pickles else "no weights"
        raise CheckpointError(
            f"expected {WEIGHTS_NAME} in {uri}/{folder}, found {reason}; pickle checkpoints are refused "
            "— convert them to safetensors on a trusted machine"
        )


def _read_unet(uri: str, folder: str, storage_options: dict[str, Any] | None) -> UNet2DModel:
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("config.json", WEIGHTS_NAME):
            Path(tmp, name).write_bytes(read_bytes(join(uri, folder, name), storage_options, concurrent=True))
        unet = UNet2DModel.from_pretrained(tmp, use_safetensors=True, low_cpu_mem_usage=False)
    return unet.eval().requires_grad_(False)


def validate_model(uri: str, storage_options: dict[str, Any] | None = None) -> LoadedPrior:
    """:func:`load_prior`, with every way a model directory can be damaged (truncated or replaced weights, a
    digest that does not match ``weights_digest``, a missing ``config.json``, a damaged calibration) turned into one
    :class:`CheckpointError` naming the model and what to do. The driver calls it before anything runs."""
    try:
        return load_prior(uri, storage_options)
    except CheckpointError:
        raise
    except (ConnectionError, TimeoutError):
        raise  # the store, not the model: resumable
    except Exception as err:  # safetensors' and diffusers' own errors for damaged files
        what = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        raise CheckpointError(f"expected a loadable model at {uri}, got {what}; re-copy the model directory or "
                              "retrain it") from None


def load_prior(uri: str, storage_options: dict[str, Any] | None = None) -> LoadedPrior:
    """Read a prior written by :func:`save_prior` (and its calibration, if present)."""
    if not exists(join(uri, "mdps.json"), storage_options):
        check_weights(uri, storage_options)  # a folder that is no model at all: say what is missing first
    meta, config = read_model_meta(uri, storage_options)
    nets = [_read_unet(uri, folder, storage_options) for folder in prior_dirs(config)]
    digest = prior_digest(nets)
    if digest != meta["weights_digest"]:
        raise CheckpointError(f"expected weights digest {meta['weights_digest']} (mdps.json) in {uri}, got {digest}: "
                              "the weights were changed or damaged; re-copy the model directory or retrain it")
    unet = nets[0] if config.tiling.prior != "per_position" else nets
    return LoadedPrior(unet, config, digest, load_calibration(uri, storage_options))


def save_calibration(calibration: Calibration, model_uri: str, storage_options: dict[str, Any] | None = None) -> None:
    """Write ``calibration.json`` next to the model."""
    text = json.dumps(calibration.to_json(), indent=2, sort_keys=True)
    write_bytes(join(model_uri, "calibration.json"), text.encode(), storage_options)


def load_calibration(model_uri: str, storage_options: dict[str, Any] | None = None) -> Calibration | None:
    """``calibration.json`` of a model, or None when the model was not calibrated."""
    fs, path = filesystem(model_uri, storage_options)
    if not fs.exists(f"{path.rstrip('/')}/calibration.json"):
        return None
    uri = join(model_uri, "calibration.json")
    try:
        data = json.loads(read_bytes(uri, storage_options))
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got a {type(data).__name__}")
        return Calibration.from_json(data)
    except (ValueError, TypeError, KeyError) as err:  # JSON syntax, a bad value, an unknown or missing key
        what = str(err).replace("Calibration.__init__() ", "") or type(err).__name__
        raise CheckpointError(f"expected a valid {uri}, got: {what}; recalibrate with `mdps calibrate --model "
                              f"{model_uri} --data <its normal images>`") from None
