"""The prior: paper-size parameter count, bit-exact save/load over fsspec, pickle refusal."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest
import torch

from mdps_ray.config.method import MdpsConfig
from mdps_ray.config.presets import PAPER_PRIOR
from mdps_ray.models.prior import build_unet, count_parameters, weights_digest
from mdps_ray.storage.checkpoints import CheckpointError, load_prior, read_model_meta, save_prior
from tests.helpers.models import TINY_PRIOR

TINY = MdpsConfig(prior=TINY_PRIOR)


def test_paper_size_prior_has_about_33m_parameters() -> None:
    n = count_parameters(build_unet(PAPER_PRIOR))
    assert n == pytest.approx(32.95e6, rel=0.005)  # docs/method.md §5: ≈ 32.95 M


@pytest.mark.parametrize("scheme", ["local", "memory"])
def test_save_load_round_trip_is_bit_exact(tiny_unet: torch.nn.Module, tmp_path: Path, scheme: str) -> None:
    uri = str(tmp_path / "model") if scheme == "local" else "memory://models/tiny"
    digest = save_prior(tiny_unet, TINY, uri)  # type: ignore[arg-type]
    loaded = load_prior(uri)
    assert loaded.digest == digest == weights_digest(tiny_unet)
    for (k, a), (k2, b) in zip(tiny_unet.state_dict().items(), loaded.unet.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    assert loaded.config == TINY and loaded.calibration is None


def test_pickle_checkpoint_is_refused_before_reading(tiny_unet: torch.nn.Module, tmp_path: Path) -> None:
    model = tmp_path / "model"
    save_prior(tiny_unet, TINY, str(model))  # type: ignore[arg-type]
    (model / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(tiny_unet.state_dict(), model / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"only pickle weights \(diffusion_pytorch_model.bin\).*refused"):
        load_prior(str(model))


def test_tampered_weights_fail_the_digest_check(tiny_unet: torch.nn.Module) -> None:
    uri = "memory://models/tampered"
    save_prior(tiny_unet, TINY, uri)  # type: ignore[arg-type]
    other = build_unet(TINY_PRIOR)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    fs = fsspec.filesystem("memory")
    fs.rm("/models/tampered/unet", recursive=True)
    save_prior(other, TINY, "memory://models/other")
    fs.copy("/models/other/unet", "/models/tampered/unet", recursive=True)
    with pytest.raises(CheckpointError, match="expected weights digest"):
        load_prior(uri)


def test_missing_model_directory_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="expected a model directory with unet/"):
        load_prior(str(tmp_path / "nothing"))


def test_a_train_out_folder_given_as_the_model_gets_the_right_hint(tmp_path: Path) -> None:
    (tmp_path / "runs" / "bottle" / "model").mkdir(parents=True)
    (tmp_path / "runs" / "bottle" / "model" / "mdps.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"did you mean .*runs/bottle/model"):
        read_model_meta(str(tmp_path / "runs" / "bottle"))
    with pytest.raises(CheckpointError, match="give <out>/model of `mdps train`"):
        read_model_meta(str(tmp_path / "nothing"))


def test_resume_takes_the_newest_complete_checkpoint(tmp_path: Path) -> None:
    import json

    from mdps_ray.storage.train_state import newest_complete

    def checkpoint(step: int, written: int, recorded: int = 100) -> None:
        folder = tmp_path / f"checkpoint_{step:06d}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"w" * written)
        (folder / "state.json").write_text(json.dumps({"step": step, "files": {"model.safetensors": recorded}}))

    checkpoint(2, 100)
    checkpoint(4, 100)
    checkpoint(6, 37)  # its upload was cut short: the marker lists 100 bytes
    (tmp_path / "checkpoint_000008").mkdir()
    (tmp_path / "checkpoint_000008" / "state.json").write_text('{"step": 8, "fil')  # a torn marker
    assert newest_complete(str(tmp_path)) == (4, str(tmp_path / "checkpoint_000004"))
    assert newest_complete(str(tmp_path / "none")) is None


@pytest.mark.parametrize(("edit", "named"), [
    ({"score_threshold": float("nan")}, "score_threshold"),
    ({"score_threshold": "0.3"}, "score_threshold"),
    ({"score_threshold": -1e9}, "within the normal scores"),
    ({"score_threshold": 1e9}, "within the normal scores"),
    ({"level_model": {"beta": [float("nan"), 0.0, 0.0], "lo": 0.1, "hi": 1.0}}, "level_model"),
    ({"surprise": 1}, "surprise"),
    ({"version": 7}, "version"),
])
def test_a_damaged_calibration_is_refused_in_one_line_naming_the_file(edit: dict, named: str,
                                                                      tmp_path: Path) -> None:
    """A NaN threshold flagged nothing and −1e9 everything, both silently; text and unknown keys were tracebacks."""
    from mdps_ray.method.calibration import Calibration
    from mdps_ray.storage.checkpoints import CheckpointError, load_calibration, save_calibration

    good = Calibration(0.1, 0.5, 0.995, 0.1, 9, normal_scores=(0.1, 0.2, 0.3, 0.4, 0.5), certified_fpr=0.1)
    save_calibration(good, str(tmp_path))
    assert load_calibration(str(tmp_path)) == good
    data = json.loads((tmp_path / "calibration.json").read_text())
    (tmp_path / "calibration.json").write_text(json.dumps({**data, **edit}))
    with pytest.raises(CheckpointError) as err:
        load_calibration(str(tmp_path))
    line = str(err.value)
    assert "calibration.json" in line and named in line and "mdps calibrate" in line and "\n" not in line


def test_an_older_calibration_below_its_median_normal_score_is_refused(tmp_path: Path) -> None:
    from mdps_ray.method.calibration import Calibration
    from mdps_ray.storage.checkpoints import CheckpointError, load_calibration

    old = {"version": 1, "mask_threshold": 0.1, "score_threshold": -1e9, "mask_quantile": 0.995, "target_fpr": 0.01,
           "n_images": 9, "score_stats": {"n": 9, "q50": 0.2, "q99": 0.5}}
    (tmp_path / "calibration.json").write_text(json.dumps(old))
    with pytest.raises(CheckpointError, match="at or above the median normal score"):
        load_calibration(str(tmp_path))
    (tmp_path / "calibration.json").write_text(json.dumps({**old, "score_threshold": 0.5}))
    assert isinstance(load_calibration(str(tmp_path)), Calibration)
