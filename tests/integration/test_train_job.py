"""Distributed training on Ray Train (2 gloo workers on the CPU): S3, resume, failures, DDP, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mdps_ray.api import Detector
from mdps_ray.cli.commands import main
from mdps_ray.config.jobs import TrainJobConfig
from mdps_ray.orchestration.faults import ENV
from mdps_ray.orchestration.train_job import TrainInputError, run_train_job

pytestmark = pytest.mark.slow

TINY = {  # a job's method: section carries typed values (as a YAML file gives them)
    "prior.image_size": 16, "prior.block_out_channels": [8, 16], "prior.attention_levels": [False, False],
    "prior.norm_num_groups": 4, "prior.attention_head_dim": 8, "maps.backbone": "random",
    "sampler.stage1.start_step": 60, "sampler.stage2.start_step": 60,
    "sampler.stage1.n_samples": 1, "sampler.stage2.n_samples": 1, "train.batch_size": 4,
}


def _job(data: str, out: str, **kw: object) -> TrainJobConfig:
    base = dict(data=data, out=out, method=TINY, max_steps=6, checkpoint_every=2, num_workers=2)
    base.update(kw)
    return TrainJobConfig(**base)  # type: ignore[arg-type]


def _card(model: Path) -> dict:
    return json.loads((model / "model_card.json").read_text())


def test_two_workers_train_from_s3_and_scoring_loads_the_result(s3, ray_local, synthetic_root: Path) -> None:
    data = s3.upload(synthetic_root, "train/data/synthetic")
    out = f"s3://{s3.bucket}/train/out"
    [model] = run_train_job(_job(data, out, storage_options=s3.storage_options))
    assert model.model_uri == f"{out}/model" and model.steps == 6 and model.calibration is not None
    fs = s3.fs()
    for name in ("unet/diffusion_pytorch_model.safetensors", "calibration.json", "model_card.json",
                 "loss_curve.csv", "loss_curve.png"):
        assert fs.exists(f"{s3.bucket}/train/out/model/{name}"), name
    assert any("checkpoint" in p for p in fs.find(f"{s3.bucket}/train/out/_train"))
    det = Detector.load(model.model_uri, storage_options=s3.storage_options)
    assert det.calibration == model.calibration
    assert det.scorer.mask_threshold == model.calibration.mask_threshold


def test_a_cpu_worker_trains_with_the_cores_of_its_node(ray_local, synthetic_root: Path, tmp_path: Path) -> None:
    # Ray sets OMP_NUM_THREADS to a worker's 1 reserved CPU; once its images are in memory it uses its node's cores
    run_train_job(_job(str(synthetic_root), str(tmp_path / "one"), num_workers=1, max_steps=2, calibrate=False))
    run_train_job(_job(str(synthetic_root), str(tmp_path / "two"), num_workers=2, max_steps=2, calibrate=False))
    assert _card(tmp_path / "one" / "model")["threads_per_worker"] == 2  # the session's Ray has 2 CPUs
    assert _card(tmp_path / "two" / "model")["threads_per_worker"] == 1  # two workers share them


def test_rerun_resumes_from_the_newest_checkpoint(ray_local, synthetic_root: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = str(tmp_path / "out")
    monkeypatch.setenv(ENV, json.dumps({"kill_worker_at_step": 3}))
    with pytest.raises(Exception):  # noqa: B017 - the worker group dies, nothing retries it
        run_train_job(_job(str(synthetic_root), out, max_failures=0, run_name="resume"))
    monkeypatch.delenv(ENV)
    [model] = run_train_job(_job(str(synthetic_root), out, max_failures=0, run_name="resume"))
    card = _card(Path(out) / "model")
    assert model.steps == 6 and card["steps"] == 6
    assert card["starts"] == [0, 2]  # the rerun started at the checkpoint of step 2, not at 0


def test_a_killed_worker_recovers_from_the_last_checkpoint(ray_local, synthetic_root: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, json.dumps({"kill_worker_at_step": 5}))
    [model] = run_train_job(_job(str(synthetic_root), str(tmp_path / "out"), max_failures=1, run_name="failover"))
    card = _card(tmp_path / "out" / "model")
    assert model.steps == 6 and card["starts"] == [0, 4]


def test_ddp_step_on_half_batches_equals_one_worker_on_the_whole_batch(ray_local, synthetic_root: Path,
                                                                        tmp_path: Path) -> None:
    data = tmp_path / "five" / "train" / "good"
    data.mkdir(parents=True)
    for p in sorted((synthetic_root / "train" / "good").glob("*.png"))[:5]:  # 4 train + 1 held out
        shutil.copy(p, data / p.name)
    models = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        run_train_job(_job(str(tmp_path / "five"), str(out), num_workers=workers, max_steps=1, calibrate=False,
                           method={**TINY, "train.ema_decay": None}, run_name=f"ddp{workers}"))
        models.append(out / "model")
    a = load_file(str(models[0] / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(models[1] / "unet" / "diffusion_pytorch_model.safetensors"))
    g1, g2 = _card(models[0])["last_grad_norm"], _card(models[1])["last_grad_norm"]
    assert g1 == pytest.approx(g2, rel=1e-5)  # DDP averaged the two half-batch gradients
    diffs = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert float((diffs > 1e-6).float().mean()) < 1e-3  # Adam's first step is ±lr; only g ≈ 0 may flip


def test_bad_training_input_fails_before_training(ray_local, synthetic_root: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty" / "train" / "good"
    empty.mkdir(parents=True)
    with pytest.raises(TrainInputError, match="expected normal training images"):
        run_train_job(_job(str(tmp_path / "empty"), str(tmp_path / "o1")))
    junk = tmp_path / "junk" / "train" / "good"
    junk.mkdir(parents=True)
    (junk / "a.png").write_text("not an image")
    with pytest.raises(TrainInputError, match="expected readable training images"):
        run_train_job(_job(str(tmp_path / "junk"), str(tmp_path / "o2")))
    with pytest.raises(TrainInputError, match=r"expected an MVTec-layout folder|found nothing"):
        run_train_job(_job(str(tmp_path / "missing"), str(tmp_path / "o3")))
    locked = tmp_path / "locked"
    locked.write_text("a file where a folder must go")
    with pytest.raises(TrainInputError, match="expected a writable output location"):
        run_train_job(_job(str(synthetic_root), str(locked / "sub")))
    assert main(["train", "--data", str(synthetic_root), "--out", str(tmp_path / "o4"), "--set", "lr=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mdps: error:") and "lr" in err and len(err.splitlines()) == 1


def test_mixed_sizes_are_resized_with_a_counted_warning(synthetic_root: Path, tmp_path: Path) -> None:
    from PIL import Image

    from mdps_ray.data.records import list_mvtec
    from mdps_ray.orchestration.train_job import _check_images

    root = tmp_path / "mixed"
    shutil.copytree(synthetic_root, root)
    Image.new("RGB", (48, 40)).save(root / "train" / "good" / "odd.png")
    with pytest.warns(UserWarning, match=r"1 training images .* differ from the common size 32x32"):
        _check_images(list_mvtec(str(root), "train"), {}, str(root))


def test_a_storage_error_in_the_image_check_is_the_stores_not_an_unreadable_image(
        synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every exception counted as an unreadable image: a store that refused became "expected readable training
    images, got none". A broken image is still skipped with a count; a refusal propagates as itself."""
    from mdps_ray.data.records import list_mvtec
    from mdps_ray.orchestration import train_job

    root = tmp_path / "broken"
    shutil.copytree(synthetic_root, root)
    (root / "train" / "good" / "zz_broken.png").write_bytes(b"not a png")
    records = list_mvtec(str(root), "train")
    with pytest.warns(UserWarning, match="1 unreadable training images"):
        assert len(train_job._check_images(records, {}, str(root))) == len(records) - 1

    def refused(uri: str, so: object) -> bytes:
        raise ConnectionRefusedError(f"store unreachable reading {uri}")

    monkeypatch.setattr(train_job, "read_bytes", refused)
    with pytest.raises(ConnectionRefusedError, match="store unreachable"):
        train_job._check_images(records, {}, str(root))


def test_max_minutes_counts_from_the_command_start_and_calibration_shows_progress(
        ray_local, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 1.2 s of budget is spent before the first step (listing, checks, the Ray Train worker group start):
    # training stops after its one guaranteed step instead of getting 1.2 s of its own.
    [model] = run_train_job(_job(str(synthetic_root), str(tmp_path / "out"), max_minutes=0.02, max_steps=100_000,
                                 num_workers=1, run_name="budget"))
    assert model.steps == 1 and model.calibration is not None
    assert "calibrating on" in capsys.readouterr().err


def test_calibration_on_the_cluster_equals_calibration_in_the_driver(ray_local, synthetic_root: Path,
                                                                      tmp_path: Path) -> None:
    """The GPU path (auto with use_gpu) calibrates in a Ray task with the training's device; on CPU the same
    task gives the driver's thresholds (keyed noise, same device; float noise from other thread counts)."""
    base = dict(max_steps=2, num_workers=1)
    [driver] = run_train_job(_job(str(synthetic_root), str(tmp_path / "d"), calibrate_where="driver", run_name="cw",
                                  **base))
    [cluster] = run_train_job(_job(str(synthetic_root), str(tmp_path / "c"), calibrate_where="cluster",
                                   run_name="cw", **base))
    a, b = cluster.calibration, driver.calibration
    assert a is not None and b is not None and a.n_images == b.n_images and a.method_hash == b.method_hash
    assert a.score_threshold == pytest.approx(b.score_threshold, rel=1e-4)
    assert a.mask_threshold == pytest.approx(b.mask_threshold, rel=1e-4)


def test_per_position_priors_train_as_parallel_ray_tasks_from_s3_and_score(s3, ray_local,
                                                                          synthetic_root: Path) -> None:
    """Also tiling.read_size=native: the side is read from the S3 images' headers (32 px) into the model."""
    data = s3.upload(synthetic_root, "train/data/positions")
    out = f"s3://{s3.bucket}/train/positions"
    tiling = {"tiling.enabled": True, "tiling.read_size": "native", "tiling.stride": 16,
              "tiling.prior": "per_position"}
    [model] = run_train_job(_job(data, out, method={**TINY, **tiling}, max_steps=3, num_workers=1,
                                 storage_options=s3.storage_options))
    fs = s3.fs()
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{s3.bucket}/train/positions/model/positions")) == \
        ["0", "1", "2", "3"]
    card = json.loads(fs.cat(f"{s3.bucket}/train/positions/model/model_card.json"))
    assert card["position_steps"] == [3, 3, 3, 3] and model.steps == 3 and model.calibration is not None
    assert card["config"]["tiling"]["read_size"] == 32
    det = Detector.load(model.model_uri, storage_options=s3.storage_options)
    assert len(det.scorer.position_denoisers) == 4 and det.calibration == model.calibration
    result = det.score(torch.zeros((2, 3, 32, 32)), ["a", "b"])
    assert result.anomaly_map.shape == (2, 1, 32, 32) and not torch.equal(result.score[0], result.score[1])


def test_the_cli_trains_tiles_at_the_native_side_and_scores_maps_at_it(ray_local, synthetic_root: Path,
                                                                      tmp_path: Path) -> None:
    """The README's `--set tiling.enabled=true` typed on `mdps train`, with read_size native (32 px images)."""
    import pandas as pd
    import yaml

    from mdps_ray.storage.maps import read_map

    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"method": TINY, "max_steps": 2, "num_workers": 1}))
    out = tmp_path / "out"
    assert main(["train", "--config", str(config), "--data", str(synthetic_root), "--out", str(out),
                 "--set", "tiling.enabled=true", "--set", "tiling.read_size=native", "--set", "tiling.stride=8"]) == 0
    assert _card(out / "model")["config"]["tiling"]["read_size"] == 32
    assert main(["score", "--model", str(out / "model"), "--data", str(synthetic_root), "--out",
                 str(tmp_path / "scored")]) == 0
    [part] = (tmp_path / "scored").glob("run-*/results/*/part-*.parquet")
    rows = pd.read_parquet(part)
    assert len(rows) >= 6 and rows.error.isna().all()
    assert {read_map(uri).shape for uri in rows.map_uri} == {(32, 32)}
