"""Promotion: the pointer moves only after a whole, loadable copy; readers see one version; rollback."""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path

import pytest
import torch

from mdps_ray.config.method import MdpsConfig
from mdps_ray.storage import promotion
from mdps_ray.storage.checkpoints import CheckpointError, load_prior, save_prior
from mdps_ray.storage.promotion import POINTER, promote, resolve_model, rollback
from tests.helpers.models import TINY_PRIOR

TINY = MdpsConfig(prior=TINY_PRIOR)


def _other(unet: torch.nn.Module) -> torch.nn.Module:
    out = copy.deepcopy(unet)
    with torch.no_grad():
        next(out.parameters()).add_(1.0)
    return out


@pytest.mark.parametrize("scheme", ["local", "memory"])
def test_promote_then_rollback_switch_what_the_uri_names(tiny_unet: torch.nn.Module, tmp_path: Path,
                                                        scheme: str) -> None:
    base = str(tmp_path) if scheme == "local" else f"memory://promote-{tmp_path.name}"
    current, candidate = f"{base}/current", f"{base}/candidate"
    first = save_prior(tiny_unet, TINY, current)  # type: ignore[arg-type]
    second = save_prior(_other(tiny_unet), TINY, candidate)  # type: ignore[arg-type]
    assert resolve_model(current) == current and first != second

    record = promote(candidate, current)
    assert record["previous"] == "." and record["current"].startswith("versions/")
    assert load_prior(resolve_model(current)).digest == second
    third = promote(current + "/" + record["current"], current)  # a version promoted again: a fresh copy
    assert third["previous"] == record["current"] and len(third["history"]) == 2

    back = rollback(current)
    assert back["current"] == record["current"] and load_prior(resolve_model(current)).digest == second
    back = rollback(current)
    assert back["current"] == third["current"]
    save_prior(tiny_unet, TINY, candidate)  # type: ignore[arg-type]
    promote(candidate, current)
    assert load_prior(resolve_model(current)).digest == first


def test_a_damaged_candidate_is_refused_and_the_pointer_does_not_move(tiny_unet: torch.nn.Module,
                                                                      tmp_path: Path) -> None:
    save_prior(tiny_unet, TINY, str(tmp_path / "current"))  # type: ignore[arg-type]
    bad = tmp_path / "bad"
    save_prior(_other(tiny_unet), TINY, str(bad))  # type: ignore[arg-type]
    weights = bad / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        promote(str(bad), str(tmp_path / "current"))
    assert not (tmp_path / "current" / POINTER).exists()
    assert resolve_model(str(tmp_path / "current")) == str(tmp_path / "current")
    with pytest.raises(CheckpointError, match="expected a promoted model with a previous version"):
        rollback(str(tmp_path / "current"))


def test_a_promotion_killed_mid_copy_leaves_the_pointer_where_it_was(tiny_unet: torch.nn.Module, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    current, candidate = str(tmp_path / "current"), str(tmp_path / "candidate")
    first = save_prior(tiny_unet, TINY, current)  # type: ignore[arg-type]
    save_prior(_other(tiny_unet), TINY, candidate)  # type: ignore[arg-type]
    real, written = promotion.write_bytes, []

    def dies_after_one_file(uri: str, data: bytes, so: dict | None = None) -> None:
        if written:
            raise KeyboardInterrupt  # the process stopped here
        written.append(uri)
        real(uri, data, so)

    monkeypatch.setattr(promotion, "write_bytes", dies_after_one_file)
    with pytest.raises(KeyboardInterrupt):
        promote(candidate, current)
    monkeypatch.undo()
    assert written and "/versions/" in written[0]
    assert resolve_model(current) == current and load_prior(resolve_model(current)).digest == first


def test_a_reader_during_promotions_always_loads_a_whole_version(tiny_unet: torch.nn.Module, tmp_path: Path) -> None:
    current, candidate = str(tmp_path / "current"), str(tmp_path / "candidate")
    digests = {save_prior(tiny_unet, TINY, current), save_prior(_other(tiny_unet), TINY, candidate)}  # type: ignore[arg-type]
    seen, stop = [], threading.Event()

    errors: list[BaseException] = []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(load_prior(resolve_model(current)).digest)
            except BaseException as err:
                errors.append(err)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(3):
            promote(candidate, current)
            rollback(current)
    finally:
        stop.set()
        reader.join()
    assert not errors and seen and set(seen) <= digests


def test_a_damaged_pointer_is_one_line(tmp_path: Path, tiny_unet: torch.nn.Module) -> None:
    save_prior(tiny_unet, TINY, str(tmp_path / "m"))  # type: ignore[arg-type]
    (tmp_path / "m" / POINTER).write_text(json.dumps({"previous": None}))
    with pytest.raises(CheckpointError, match=r"expected a readable .*_CURRENT.json \(written by `mdps promote`\)"):
        resolve_model(str(tmp_path / "m"))
