"""The scoring job on a real Ray (embedded) and a real S3 API (moto), end to end."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from mdps_ray.cli.commands import main
from mdps_ray.config.jobs import ScoreJobConfig
from mdps_ray.data.records import list_mvtec
from mdps_ray.metrics.reduce import reduce_rows
from mdps_ray.orchestration.faults import ENV
from mdps_ray.orchestration.score_pipeline import run_score_job
from mdps_ray.storage.results import RESULT_SCHEMA
from mdps_ray.storage.runs import RunPaths, read_results
from mdps_ray.workflows import stored_loaders
from tests.helpers.infra import FAKE_SECRET
from tests.helpers.models import CONFIG

pytestmark = pytest.mark.slow


def _scores(run_dir: str, so: dict | None = None) -> dict[str, float]:
    out, _, run_id = run_dir.rpartition("/")
    rows = read_results(RunPaths(out, run_id), so).to_pylist()
    return {r["image_id"]: r["score"] for r in rows}


def test_scores_an_s3_dataset_once_per_image_and_leaks_no_secret(
    s3, ray_local, tiny_model: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = s3.upload(synthetic_root, "data/synthetic")
    model = s3.upload(tiny_model, "models/tiny")
    job = ScoreJobConfig(model=model, data=data, out=f"s3://{s3.bucket}/scores", storage_options=s3.storage_options)
    summary = run_score_job(job)
    fs = s3.fs()
    root = summary.run_dir.removeprefix("s3://")
    for name in ("_SUCCESS", "metrics.json", "run.json", "manifest.parquet"):
        assert fs.exists(f"{root}/{name}"), name
    assert not fs.exists(f"{root}/_staging")
    tables = [pq.read_table(io.BytesIO(fs.cat_file(p))) for p in fs.find(f"{root}/results") if p.endswith(".parquet")]
    rows = [r for t in tables for r in t.to_pylist()]
    n_test = len(list_mvtec(str(synthetic_root), "test"))
    assert len(rows) == n_test == len({r["image_id"] for r in rows})
    for t in tables:
        assert t.schema.remove_metadata().equals(RESULT_SCHEMA.remove_metadata())
    assert all(r["status"] == "ok" and r["map_uri"].startswith("s3://") for r in rows)
    record = json.loads(fs.cat_file(f"{root}/run.json"))
    assert record["execution"] == {"device": "cpu", "precision": "fp32", "tf32": False,
                                   "rows_config_hash": record["config_hash"]}  # CPU rows keep the plain hash
    assert {r["config_hash"] for r in rows} == {record["config_hash"]}
    # the read-back commands reach the run through the same storage options, given as a YAML file
    (tmp_path / "s3.yaml").write_text(yaml.safe_dump({"storage_options": s3.storage_options}))
    access = ["--config", str(tmp_path / "s3.yaml")]
    assert main(["runs", f"s3://{s3.bucket}/scores", *access]) == 0
    assert main(["evaluate", summary.run_dir, *access]) == 0
    assert main(["report", summary.run_dir, "--top", "2", *access]) == 0
    printed = capsys.readouterr()
    assert summary.run_dir.rsplit("/", 1)[-1] in printed.out and printed.out.strip().endswith("report.html")
    assert FAKE_SECRET not in printed.out + printed.err
    assert fs.exists(f"{root}/report.html")
    for path in fs.find(f"{s3.bucket}/"):
        assert FAKE_SECRET.encode() not in fs.cat_file(path), path


def test_one_and_two_actors_give_identical_scores(ray_local, tiny_model: Path, synthetic_root: Path,
                                                   tmp_path: Path) -> None:
    base = dict(model=str(tiny_model), data=str(synthetic_root), out=str(tmp_path), batch_size=3)
    one = run_score_job(ScoreJobConfig(**base, run_id="one", num_actors=1))
    two = run_score_job(ScoreJobConfig(**base, run_id="two", num_actors=2, reduce_shard_rows=4))
    a, b = _scores(one.run_dir), _scores(two.run_dir)
    # the same to float32 rounding: an actor's torch threads are the CPUs it holds (2 for one actor, 1 each for two
    # here), and convolution sums split over other threads round differently (up to 1.9e-6 measured on an AVX2-only
    # CPU; a dependence on batch-mates or the actor would move scores by orders of magnitude more)
    assert a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-5 * max(1.0, abs(a[k])) for k in a)
    # "two" was reduced by Ray tasks over shards of 4 rows: the same metrics as one pass of the
    # core's reduce over the committed rows (what the driver does for "one")
    rows = read_results(RunPaths(str(tmp_path), "two")).to_pylist()
    single = reduce_rows(rows, CONFIG.prior.image_size, CONFIG.maps.crop, stored_loaders(), shards=1)["overall"]
    for key in ("image_auroc", "pixel_auroc", "aupro", "f1_max", "ap"):
        assert abs(two.metrics["overall"][key] - single[key]) <= 1e-9, key


def test_a_killed_actor_is_replaced_and_every_image_lands_once(ray_local, tiny_model: Path, synthetic_root: Path,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = dict(model=str(tiny_model), data=str(synthetic_root), out=str(tmp_path), batch_size=2, num_actors=1)
    clean = run_score_job(ScoreJobConfig(**base, run_id="clean"))
    monkeypatch.setenv(ENV, json.dumps({"kill_actor_after_batches": 1}))
    faulty = run_score_job(ScoreJobConfig(**base, run_id="faulty"))
    assert (tmp_path / "faulty" / "_fault_actor_killed").exists()
    rows = read_results(RunPaths(str(tmp_path), "faulty")).column("image_id").to_pylist()
    assert len(rows) == len(set(rows)) == clean.n_images
    a, b = _scores(clean.run_dir), _scores(faulty.run_dir)
    assert all(abs(a[k] - b[k]) <= 1e-5 * max(1.0, abs(a[k])) for k in a)


def test_a_killed_driver_resumes_to_the_uninterrupted_result(tiny_model: Path, synthetic_root: Path,
                                                             tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "mdps_ray.cli.commands", "score", "--model", str(tiny_model),
           "--data", str(synthetic_root),
           "--out", str(tmp_path), "--set", "batch_size=2", "--set", "num_actors=1"]
    first = subprocess.run([*cmd, "--run-id", "r"], capture_output=True, text=True, timeout=300,
                           env={**os.environ, ENV: json.dumps({"kill_driver_after_batches": 2})})
    assert first.returncode == -9, first.stderr[-2000:]  # SIGKILL, sent by the fault hook after 2 batches
    staged = list((tmp_path / "r" / "_staging").glob("part-*.parquet"))
    assert len(staged) == 2 and not (tmp_path / "r" / "_SUCCESS").exists()
    n_staged = sum(pq.read_table(p).num_rows for p in staged)
    second = subprocess.run([*cmd, "--run-id", "r"], capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.strip().splitlines()[-1] == str(tmp_path / "r")
    scored_now = int(second.stdout.split(" this attempt")[0].rsplit("(", 1)[1].split(",")[1].split()[0])
    n_test = len(list_mvtec(str(synthetic_root), "test"))
    assert scored_now == n_test - n_staged  # resumed: the staged images were not scored again
    full = subprocess.run([*cmd, "--run-id", "u"], capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr[-2000:]
    assert _scores(str(tmp_path / "r")) == pytest.approx(_scores(str(tmp_path / "u")), rel=1e-5, abs=1e-6)


def _bomb_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


def _bad_dataset(root: Path, synthetic_root: Path) -> Path:
    good = sorted((synthetic_root / "test" / "good").glob("*.png"))
    root.mkdir(parents=True)
    rows = ["uri,label,mask_uri"]
    for i, p in enumerate(good):
        shutil.copy(p, root / f"good{i}.png")
        rows.append(f"{root / f'good{i}.png'},0,")
    src = Image.open(good[0])
    arr = np.asarray(src.convert("L"))
    Image.fromarray(arr.astype(np.uint16) * 257).save(root / "sixteen.png")
    src.convert("L").save(root / "gray.png")
    src.convert("RGBA").save(root / "rgba.png")
    src.convert("P").save(root / "palette.png")
    data = (root / "gray.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 3])
    (root / "notes.png").write_text("this is not an image")
    (root / "bomb.png").write_bytes(_bomb_png(60000, 60000))
    shutil.copy(good[0], root / "nomask.png")
    for name in ("sixteen", "gray", "rgba", "palette", "truncated", "notes", "bomb"):
        rows.append(f"{root / (name + '.png')},0,")
    rows.append(f"{root / 'nomask.png'},1,{root / 'missing_mask.png'}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def test_bad_inputs_become_error_rows_and_the_threshold_decides_the_exit(
    ray_local, tiny_model: Path, synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _bad_dataset(tmp_path / "bad", synthetic_root)
    job = ScoreJobConfig(model=str(tiny_model), data=str(manifest), out=str(tmp_path / "out"), run_id="lenient",
                         max_error_fraction=0.5)
    summary = run_score_job(job)
    errors = read_results(RunPaths(str(tmp_path / "out"), "lenient"), errors=True).to_pylist()
    reasons = {r["uri"].rsplit("/", 1)[-1]: r["error"] for r in errors}
    assert set(reasons) == {"truncated.png", "notes.png", "bomb.png", "nomask.png"}
    assert "not a readable image" in reasons["notes.png"]
    assert "decompression bomb" in reasons["bomb.png"] or "exceeds the limit" in reasons["bomb.png"]
    assert "mask not found" in reasons["nomask.png"]
    ok = read_results(RunPaths(str(tmp_path / "out"), "lenient")).column("uri").to_pylist()
    assert {u.rsplit("/", 1)[-1] for u in ok} >= {"sixteen.png", "gray.png", "rgba.png", "palette.png"}
    assert summary.n_errors == 4
    code = main(["score", "--model", str(tiny_model), "--data", str(manifest), "--out", str(tmp_path / "out"),
                 "--run-id", "strict", "--set", "max_error_fraction=0.1"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("mdps: error:")]
    assert code != 0 and len(errors) == 1 and "max_error_fraction" in errors[0] and "Traceback" not in err
    assert not (tmp_path / "out" / "strict" / "_SUCCESS").exists()


def test_nightly_run_scores_only_new_images(ray_local, tiny_model: Path, synthetic_root: Path,
                                            tmp_path: Path) -> None:
    archive = tmp_path / "archive" / "line1"
    archive.mkdir(parents=True)
    good = sorted((synthetic_root / "train" / "good").glob("*.png"))
    for p in good[:5]:
        shutil.copy(p, archive / p.name)
    base = dict(model=str(tiny_model), data=str(archive), out=str(tmp_path / "nightly"), incremental=True)
    first = run_score_job(ScoreJobConfig(**base, date="2026-11-28"))
    assert first.n_images == 5
    for p in good[5:8]:
        shutil.copy(p, archive / p.name)
    second = run_score_job(ScoreJobConfig(**base, date="2026-11-29"))
    assert second.n_images == 3 and second.n_scored_now == 3
    assert Path(second.run_dir).name.startswith("nightly-2026-11-29")
    parts = list(Path(second.run_dir).glob("results/line1/2026-11-29/*.parquet"))
    assert len(parts) == 1 and pq.read_table(parts[0]).num_rows == 3
    again = run_score_job(ScoreJobConfig(**base, date="2026-11-29"))
    assert again.run_dir == second.run_dir and again.n_scored_now == 0
    # night 3: nothing new — an empty, committed run, not an error (the nightly job must stay green)
    empty = run_score_job(ScoreJobConfig(**base, date="2026-11-30"))
    assert empty.n_images == 0 and (Path(empty.run_dir) / "_SUCCESS").exists()
    assert json.loads((Path(empty.run_dir) / "metrics.json").read_text())["overall"]["n_images"] == 0


def test_an_empty_night_exits_zero_and_an_empty_plain_run_is_one_line(ray_local, tiny_model: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    argv = ["score", "--model", str(tiny_model), "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]
    assert main([*argv, "--incremental", "--set", "date=2026-12-02"]) == 0
    out = capsys.readouterr().out
    assert "scored 0 images" in out and "next: `mdps report " in out
    # outside --incremental an empty input is a mistake (a wrong path, an empty manifest): it committed an empty run
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "found none" in err and "--incremental" in err
    (tmp_path / "header_only.csv").write_text("uri\n")
    assert main([*argv[:4], str(tmp_path / "header_only.csv"), *argv[5:]]) == 2
    assert "found none" in capsys.readouterr().err


def test_relative_out_gives_absolute_map_uris_that_open_from_elsewhere(
    ray_local, tiny_model: Path, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "here").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    summary = run_score_job(ScoreJobConfig(model=str(tiny_model), data=str(synthetic_root), out="scores"))
    assert Path(summary.run_dir).is_absolute()
    rows = read_results(RunPaths(*summary.run_dir.rsplit("/", 1))).to_pylist()
    assert rows and all(Path(r["map_uri"]).is_absolute() for r in rows)
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["evaluate", summary.run_dir]) == 0
    assert main(["report", summary.run_dir, "--top", "2"]) == 0


def test_rerunning_after_the_data_changed_scores_what_is_there_now(ray_local, tiny_model: Path,
                                                                    synthetic_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "line"
    shutil.copytree(synthetic_root / "train" / "good", folder)
    base = dict(model=str(tiny_model), data=str(folder), out=str(tmp_path / "o"), batch_size=4)
    first = run_score_job(ScoreJobConfig(**base))
    shutil.copy(next(folder.glob("*.png")), folder / "zz-added.png")
    victim = sorted(folder.glob("*.png"))[0]
    victim.unlink()
    second = run_score_job(ScoreJobConfig(**base))
    assert second.run_dir != first.run_dir and second.n_scored_now == second.n_images == first.n_images
    ids = set(read_results(RunPaths(*second.run_dir.rsplit("/", 1))).column("image_id").to_pylist())
    assert "line/zz-added" in ids and f"line/{victim.stem}" not in ids
    assert run_score_job(ScoreJobConfig(**base)).run_dir == second.run_dir  # unchanged data: the same run


def test_validation_before_computing_and_error_rows_retried_after_a_fix(
        ray_local, tiny_model: Path, synthetic_root: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    good = sorted((synthetic_root / "test" / "good").glob("*.png"))
    folder = tmp_path / "batch"
    folder.mkdir()
    for i in range(9):
        shutil.copy(good[i % len(good)], folder / f"img{i}.png")
    Image.open(good[0]).convert("RGB").save(folder / "x.jpg")
    shutil.copy(good[1], folder / "x.png")  # x.png + x.jpg: two images, two ids (was: the whole run refused)
    os.mkfifo(folder / "pipe.png")  # a FIFO: an error row (was: the run hung on the read)
    out = tmp_path / "out"
    assert main(["score", "--model", str(tiny_model), "--data", str(folder), "--out", str(out), "--run-id", "v"]) == 0
    ids = {r["image_id"] for r in pq.read_table(out / "v" / "results").to_pylist()}
    assert {"batch/x.png", "batch/x.jpg"} <= ids and len(ids) == 11
    [err] = pq.read_table(out / "v" / "errors").to_pylist()
    assert err["image_id"] == "batch/pipe" and "not a regular file" in err["error"]

    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(3):
        shutil.copy(good[i], broken / f"ok{i}.png")
        (broken / f"bad{i}.png").write_text("not yet an image")
    args = ["score", "--model", str(tiny_model), "--data", str(broken), "--out", str(out), "--run-id", "fix"]
    capsys.readouterr()
    assert main(args) == 2 and "3 of 6 inputs could not be scored" in capsys.readouterr().err
    for i in range(3):
        shutil.copy(good[i], broken / f"bad{i}.png")  # the user fixes the inputs and reruns the same command
    assert main(args) == 0
    assert pq.read_table(out / "fix" / "results").num_rows == 6 and not (out / "fix" / "errors").exists()

    empty_model = tmp_path / "noweights"
    shutil.copytree(tiny_model, empty_model)
    (empty_model / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    capsys.readouterr()
    assert main(["score", "--model", str(empty_model), "--data", str(folder), "--out", str(out)]) == 2
    err_line = capsys.readouterr().err.strip()
    assert err_line.startswith("mdps: error: expected diffusion_pytorch_model.safetensors in") and "\n" not in err_line


def test_device_cuda_on_the_embedded_ray_fails_at_once_in_one_line(ray_local, tiny_model: Path, synthetic_root: Path,
                                                                  tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    args = ["score", "--model", str(tiny_model), "--data", str(synthetic_root), "--out", str(tmp_path),
            "--set", "device=cuda"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mdps: error: expected GPUs in the Ray cluster for device=cuda, got none"), err
    assert not any(line.startswith("Traceback") for line in err)
