"""Resumable training state without pickle: tensors in safetensors, the rest in JSON.

<dir>/model.safetensors       raw (non-EMA) UNet weights
<dir>/optimizer.safetensors   Adam moments and step counts, keyed state.<param index>.<name>
<dir>/ema.safetensors         EMA shadow parameters, keyed ema.<param index>
<dir>/state.json              step, elapsed seconds, losses, optimizer param groups, EMA scalars
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mdps_ray.method.training import PriorTrainer
from mdps_ray.storage.uris import fresh


def save_state(trainer: PriorTrainer, directory: Path, elapsed: float, extra: dict[str, Any] | None = None) -> None:
    """The trainer's weights, optimiser and EMA state and its history (``state.json``, with ``extra`` keys)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in trainer.module.state_dict().items()},
        str(directory / "model.safetensors"),
    )
    opt = trainer.optimizer.state_dict()
    tensors = {
        f"state.{i}.{name}": v.detach().cpu().reshape(v.shape).contiguous()
        for i, st in opt["state"].items()
        for name, v in st.items()
        if torch.is_tensor(v)
    }
    if tensors:
        save_file(tensors, str(directory / "optimizer.safetensors"))
    meta: dict[str, Any] = {
        "step": trainer.step_count,
        "elapsed": elapsed,
        "losses": trainer.losses,
        "grad_norms": trainer.grad_norms,
        "starts": trainer.starts,
        "param_groups": opt["param_groups"],
        **(extra or {}),
    }
    if trainer.ema is not None:
        ema = trainer.ema.state_dict()
        save_file(
            {f"ema.{i}": p.detach().cpu().contiguous() for i, p in enumerate(ema["shadow_params"])},
            str(directory / "ema.safetensors"),
        )
        meta["ema"] = {k: v for k, v in ema.items() if k != "shadow_params"}
    # state.json is the marker: it lists every file of the checkpoint with its size, so a checkpoint whose
    # upload was cut short (Ray Train copies the folder file by file) is recognised as incomplete
    meta["files"] = {p.name: p.stat().st_size for p in sorted(directory.glob("*.safetensors"))}
    (directory / "state.json").write_text(json.dumps(meta))


def newest_complete(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[int, str] | None:
    """(step, folder) of the newest checkpoint under ``uri`` whose state.json lists files all present at
    their recorded sizes; incomplete ones are passed over (older checkpoints without the list count)."""
    fs, root = fresh(uri, storage_options)
    found = []
    for state in fs.glob(f"{root.rstrip('/')}/checkpoint_*/state.json") if fs.exists(root) else []:
        try:
            meta = json.loads(fs.cat_file(state))
        except (ValueError, FileNotFoundError):
            continue  # a torn marker: not a checkpoint
        folder = state.rsplit("/", 1)[0]
        files = meta.get("files", {})
        if all(fs.exists(f"{folder}/{name}") and fs.size(f"{folder}/{name}") == size for name, size in files.items()):
            found.append((int(meta["step"]), folder))
    return max(found) if found else None


def load_state(trainer: PriorTrainer, directory: Path) -> float:
    """Restore a trainer in place; returns the elapsed training seconds recorded with it."""
    meta = json.loads((directory / "state.json").read_text())
    device = next(trainer.module.parameters()).device
    trainer.module.load_state_dict(
        {k: v.to(device) for k, v in load_file(str(directory / "model.safetensors")).items()}
    )
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    if (directory / "optimizer.safetensors").exists():
        for key, value in load_file(str(directory / "optimizer.safetensors")).items():
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = value.to(device) if name != "step" else value
    trainer.optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    if trainer.ema is not None and "ema" in meta:
        shadows = load_file(str(directory / "ema.safetensors"))
        trainer.ema.load_state_dict(
            {**meta["ema"], "shadow_params": [shadows[f"ema.{i}"].to(device) for i in range(len(shadows))]}
        )
    trainer.step_count = int(meta["step"])
    trainer.losses = list(meta["losses"])
    trainer.grad_norms = list(meta.get("grad_norms", []))
    trainer.starts = list(meta.get("starts", []))
    return float(meta["elapsed"])
