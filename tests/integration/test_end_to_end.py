"""End to end on real files: train a tiny prior, save, load through the API, calibrate, score."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from mdps_ray.api import Detector
from mdps_ray.cli.commands import main
from mdps_ray.config.method import MapConfig, MaskConfig, MdpsConfig, TrainConfig
from mdps_ray.config.overrides import apply_overrides
from mdps_ray.config.presets import DEFAULT
from mdps_ray.data.images import load_images
from mdps_ray.data.records import list_mvtec
from mdps_ray.data.splits import split_holdout
from mdps_ray.storage.checkpoints import save_calibration, save_prior
from mdps_ray.workflows import calibrate_local, evaluate_local, train_local
from tests.helpers.models import TINY_PRIOR, tiny_sampler

pytestmark = pytest.mark.slow

SMALL = MdpsConfig(
    prior=TINY_PRIOR.model_copy(update={"image_size": 32}),
    train=TrainConfig(batch_size=8, lr=2e-3, t_max=200),
    sampler=tiny_sampler(mask=MaskConfig(mode="calibrated")),  # threshold from calibration.json
    maps=MapConfig(backbone="random", blur_sigma=1.0, stage1_weight=0.0),
)


def test_train_save_load_calibrate_score(synthetic_root: Path, tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    train_records, holdout = split_holdout(list_mvtec(str(synthetic_root), "train"), 0.2)
    assert len(holdout) == 7 and not {r.image_id for r in holdout} & {r.image_id for r in train_records}
    trainer = train_local(train_records, SMALL, max_steps=30, max_seconds=None, device=cpu)
    assert trainer.step_count == 30 and trainer.losses[-1] < trainer.losses[0]

    model = tmp_path / "model"
    digest = save_prior(trainer.final_unet(), SMALL, str(model))
    det = Detector.load(str(model))
    assert det.model_digest == digest and det.calibration is None
    cal = calibrate_local(det.scorer, holdout, 8, cpu, model_digest=digest)
    save_calibration(cal, str(model))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        det = Detector.load(str(model))
        Detector.load(str(model), overrides=["runtime.channels_last=false"])  # speed knobs keep the thresholds
    assert not [w for w in caught if "calibration.json" in str(w.message)]
    assert det.calibration == cal and det.scorer.mask_threshold == cal.mask_threshold and cal.method_hash
    with pytest.warns(UserWarning, match=r"calibration\.json of .* was fitted with, got different ones"):
        Detector.load(str(model), overrides=["maps.stage1_weight=0.5"])
    test = list_mvtec(str(synthetic_root), "test")
    result = det.score([r.uri for r in test[:3]], [r.image_id for r in test[:3]])
    assert result.score.shape == (3,) and det.is_anomalous(result).dtype == torch.bool

    ev = evaluate_local(det.scorer, test, 8, cpu)
    assert ev.maps.shape == (len(test), 32, 32)
    for key in ("image_auroc", "pixel_auroc", "aupro", "f1_max", "ap"):
        assert 0.0 <= ev.metrics[key] <= 1.0


def test_transductive_mode_runs_two_passes(synthetic_root: Path, tmp_path: Path) -> None:
    trainer = train_local(list_mvtec(str(synthetic_root), "train"), SMALL, 5, None, torch.device("cpu"))
    save_prior(trainer.final_unet(), SMALL, str(tmp_path / "m"))
    cfg = apply_overrides(SMALL, ["sampler.mask.mode=transductive", "sampler.mask.threshold=null"])
    det = Detector.load(str(tmp_path / "m"), config=cfg)
    records = list_mvtec(str(synthetic_root), "test")
    ev = evaluate_local(det.scorer, records, 4, torch.device("cpu"))
    assert 0.0 <= ev.metrics["image_auroc"] <= 1.0
    # by hand: stage 1 over the whole set, τ = lo + f·(hi − lo) of its evidence, then stage 2 under τ
    y, ids = load_images([r.uri for r in records], 32), [r.image_id for r in records]
    s1 = det.scorer.stage1(y, ids)
    evidence = det.scorer.mask_evidence(s1, y)
    tau = float(evidence.min()) + cfg.sampler.mask.fraction * float(evidence.max() - evidence.min())
    assert torch.allclose(ev.scores, det.scorer.score(y, ids, tau, s1).score, atol=1e-5)
    # the threshold is the set's: the first half alone masks with its own range, and some image scores otherwise
    half = evaluate_local(det.scorer, records[:5], 4, torch.device("cpu"))
    assert not torch.allclose(half.scores, ev.scores[:5], atol=1e-5)


def test_demo_command_scores_on_ray_and_writes_parquet_metrics_and_report(
    ray_local, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The code path of `make demo`, with a shorter budget."""
    args = ["demo", "--out", str(tmp_path / "demo"), "--train-seconds", "20", "--max-steps", "40",
            "--set", "prior.image_size=32", "--set", "maps.backbone=random",
            "--set", "sampler.stage1.n_samples=1", "--set", "sampler.stage2.n_samples=1"]
    assert main(args) == 0
    report = Path(capsys.readouterr().out.strip().splitlines()[-1])
    run = report.parent
    assert report.name == "report.html" and (run / "_SUCCESS").exists()
    metrics = json.loads((run / "metrics.json").read_text())["overall"]
    assert 0.0 <= metrics["image_auroc"] <= 1.0 and metrics["n_images"] == 20
    tables = [pq.read_table(p) for p in (run / "results").rglob("*.parquet")]
    assert sum(t.num_rows for t in tables) == 20
    assert (tmp_path / "demo" / "model" / "calibration.json").exists()


def test_cli_user_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--set", "sampler.stage2.rho=-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mdps: error:") and "\n" not in err and "sampler.stage2.rho" in err
    assert main(["demo", "--data", "/nonexistent/category", "--max-steps", "1"]) == 2
    assert "expected an MVTec-layout folder" in capsys.readouterr().err


def test_default_preset_is_the_documented_cpu_setting() -> None:
    assert DEFAULT.prior.image_size == 64 and DEFAULT.maps.backbone == "none"  # see benchmarks/results/quality.md
    assert DEFAULT.sampler.guidance_norm == "per_image" and DEFAULT.maps.weighting == "per_image"
