"""Every preset trains, calibrates and scores: the paper's 18 and the default, shrunk to CPU size.

The presets keep their method (sampler, mask mode, guidance norm, map weighting, score rule, training recipe);
only the prior's size, the start steps, the crop and the backbone (the Wide-ResNet needs user weights: the
untrained stand-in here) are shrunk by overrides. Two-stage paper presets mask transductively: calibration
used to fail on them after training ("expected a stage-1 mask threshold for mask mode 'transductive'").
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mdps_ray.api import Detector
from mdps_ray.cli.commands import main
from mdps_ray.config.method import MdpsConfig
from mdps_ray.config.overrides import apply_overrides
from mdps_ray.config.presets import preset, preset_names
from mdps_ray.data.records import list_mvtec
from mdps_ray.data.splits import split_holdout
from mdps_ray.method.calibration import is_anomalous
from mdps_ray.storage.checkpoints import load_calibration, save_calibration, save_prior
from mdps_ray.storage.runs import RunPaths, read_results
from mdps_ray.workflows import calibrate_local, evaluate_local, final_priors, train_local_priors

pytestmark = pytest.mark.integration

CPU_SIZE = [
    "prior.image_size=16", "prior.block_out_channels=[8,16]", "prior.layers_per_block=1",
    "prior.attention_levels=[false,false]", "prior.norm_num_groups=4", "prior.attention_head_dim=8",
    "prior.resnet_updown=false", "sampler.stage1.start_step=60", "sampler.stage2.start_step=60",
]


def shrunk(name: str) -> MdpsConfig:
    """The preset at CPU size: everything else as released."""
    cfg = preset(name)
    extra = [] if cfg.maps.backbone in ("none", "random") else ["maps.backbone=random"]
    extra += [] if cfg.maps.crop is None else ["maps.crop=12"]
    return apply_overrides(cfg, CPU_SIZE + extra)


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_trains_calibrates_and_scores(name: str, synthetic_root: Path, tmp_path: Path) -> None:
    cfg = shrunk(name)
    assert (cfg.sampler, cfg.score, cfg.train) == (
        preset(name).sampler.model_copy(update={"stage1": cfg.sampler.stage1, "stage2": cfg.sampler.stage2}),
        preset(name).score, preset(name).train)  # the method is the preset's
    train, holdout = split_holdout(list_mvtec(str(synthetic_root), "train"), 0.3)
    trainers = train_local_priors(train, cfg, 2, None, torch.device("cpu"))
    model = tmp_path / "model"
    digest = save_prior(final_priors(trainers, cfg), cfg, str(model))
    scorer = Detector.load(str(model), check_calibration=False).scorer
    cal = calibrate_local(scorer, holdout, 8, torch.device("cpu"), target_fpr=0.2, model_digest=digest)
    assert math.isfinite(cal.score_threshold) and cal.n_images == len(holdout)
    assert (cal.mask_threshold is None) == (cfg.sampler.mask.mode != "calibrated")
    save_calibration(cal, str(model))
    det = Detector.load(str(model))
    ev = evaluate_local(det.scorer, list_mvtec(str(synthetic_root), "test"), 8)
    assert ev.scores.shape == (10,) and bool(torch.isfinite(ev.scores).all())
    p = det.calibration.p_values(ev.scores) if det.calibration is not None else None
    assert p is not None and bool(((p > 0) & (p <= 1)).all())
    assert is_anomalous(ev.scores, cal.score_threshold).dtype == torch.bool


@pytest.mark.slow
def test_a_paper_preset_trains_calibrates_and_scores_through_the_cli(
        synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mdps train --preset paper/…`, `mdps calibrate`, `mdps score`: the path the README's paper-scale command
    takes, on Ray, with a transductive two-stage preset."""
    name = "paper/mvtec/bottle"
    sets = [a for s in [*CPU_SIZE, "maps.backbone=random", "maps.crop=12"] for a in ("--set", s)]
    out = tmp_path / "out"
    assert main(["train", "--preset", name, "--data", str(synthetic_root), "--out", str(out), "--max-steps", "2",
                 *sets]) == 0
    model = out / "model"
    printed = capsys.readouterr().out
    assert "certified" in printed and str(model) in printed
    cal = load_calibration(str(model))
    assert cal is not None and cal.mask_threshold is None and cal.certified_fpr is not None
    assert main(["calibrate", "--model", str(model), "--data", str(synthetic_root), "--target-fpr", "0.2"]) == 0
    recal = json.loads(capsys.readouterr().out)
    assert recal["certified_fpr"] == pytest.approx(max(0.2, 1 / (len(recal["normal_scores"]) + 1)))
    assert main(["score", "--model", str(model), "--data", str(synthetic_root), "--out", str(tmp_path / "runs"),
                 "--run-id", "r1"]) == 0
    rows = read_results(RunPaths(str(tmp_path / "runs"), "r1"))
    assert rows.num_rows == 10 and all(v is not None for v in rows.column("p_value").to_pylist())
    assert set(rows.column("status").to_pylist()) == {"ok"}
