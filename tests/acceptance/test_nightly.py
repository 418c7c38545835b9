"""Three nights of `mdps score --incremental` over an archive on a real S3 API (moto on 127.0.0.1).

Night 1 scores the archive; night 2 finds nothing new and commits an empty run; night 3 finds one
image added, one rewritten in place and one deleted. What each night holds is what README.md's
"Nightly" paragraph says: the images new or changed that night, nothing else.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image, ImageEnhance

from mdps_ray.cli.commands import main

pytestmark = pytest.mark.slow


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _night(s3, job: Path, date: str, capsys: pytest.CaptureFixture[str]) -> tuple[str, dict[str, float]]:
    code = main(["score", "--incremental", "--config", str(job), "--set", f"date={date}"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert code == 0, printed
    run = printed[-1]
    fs = s3.fs()
    root = run.removeprefix("s3://")
    assert fs.exists(f"{root}/_SUCCESS")
    parts = [p for p in fs.find(f"{root}/results") if p.endswith(".parquet")] if fs.exists(f"{root}/results") else []
    rows = [r for p in parts for r in pq.read_table(io.BytesIO(fs.cat_file(p))).to_pylist()]
    assert all(r["dt"] == date for r in rows)
    return run, {r["image_id"]: r["score"] for r in rows}


def test_three_nights_on_s3(s3, ray_local, tiny_model: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    fs = s3.fs()
    archive = f"s3://{s3.bucket}/nights/archive"
    for i, name in enumerate("abcde"):
        fs.pipe_file(f"{s3.bucket}/nights/archive/{name}.png", _png(i))
    model = s3.upload(tiny_model, "nights/model")
    out = f"s3://{s3.bucket}/nights/scores"
    job = tmp_path / "nightly.yaml"  # the job YAML a nightly scheduler would hold (credentials: storage_options)
    job.write_text(yaml.safe_dump({"model": model, "data": archive, "out": out,
                                   "storage_options": s3.storage_options}))

    run1, night1 = _night(s3, job, "2026-12-01", capsys)
    assert sorted(night1) == [f"archive/{n}" for n in "abcde"]  # folder layout: <folder>/<stem>

    run2, night2 = _night(s3, job, "2026-12-02", capsys)
    assert night2 == {} and run2 != run1  # nothing new: an empty, committed run, exit 0

    fs.pipe_file(f"{s3.bucket}/nights/archive/f.png", _png(10))  # added
    fs.pipe_file(f"{s3.bucket}/nights/archive/b.png", _png(11))  # rewritten in place, same name
    fs.rm(f"{s3.bucket}/nights/archive/c.png")  # deleted
    run3, night3 = _night(s3, job, "2026-12-03", capsys)
    assert sorted(night3) == ["archive/b", "archive/f"], night3
    assert night3["archive/b"] != night1["archive/b"]  # the new pixels were scored

    again, same = _night(s3, job, "2026-12-03", capsys)  # the night resubmitted
    assert again == run3 and same == night3
    _, first_again = _night(s3, job, "2026-12-01", capsys)
    assert first_again == night1  # committed nights are never rewritten: c.png's row stays in night 1

    access = tmp_path / "access.yaml"
    access.write_text(yaml.safe_dump({"storage_options": s3.storage_options}))
    main(["trend", out, "--config", str(access)])  # the empty night is a row too, with no verdict
    capsys.readouterr()
    trend = pq.read_table(io.BytesIO(fs.cat_file(f"{s3.bucket}/nights/scores/_trend/trend.parquet"))).to_pylist()
    assert [(r["night"], r["images"]) for r in trend] == [("2026-12-01", 5), ("2026-12-02", 0), ("2026-12-03", 2)]
    assert trend[1]["drifted"] is None and trend[1]["drift"] == "no images scored this night"


def test_trend_compare_and_promote_on_s3(s3, ray_local, tiny_model: Path, candidate_model: Path, synthetic_root: Path,
                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The nightly story's other half on S3: three nights (the third brightened), `mdps trend` reading only run.json
    and writing its files to the bucket, a candidate compared over the same images, promoted, then rolled back."""
    fs = s3.fs()
    root = f"{s3.bucket}/watch"
    normals = sorted((synthetic_root / "train" / "good").glob("*.png"))
    for k, p in enumerate(normals[6:22]):  # nights 1 and 2: ordinary images; night 3: the same kind, brighter
        fs.pipe_file(f"{root}/archive-{1 + k // 8}/{p.name}", p.read_bytes())
    for p in normals[:8]:
        buf = io.BytesIO()
        ImageEnhance.Brightness(Image.open(p).convert("RGB")).enhance(1.4).save(buf, format="PNG")
        fs.pipe_file(f"{root}/archive-3/b-{p.name}", buf.getvalue())
    model = s3.upload(tiny_model, "watch/model")
    candidate = s3.upload(candidate_model, "watch/candidate")
    access = tmp_path / "access.yaml"
    access.write_text(yaml.safe_dump({"storage_options": s3.storage_options}))
    out = f"s3://{root}/scores"
    for night in (1, 2, 3):
        job = tmp_path / f"night{night}.yaml"
        job.write_text(yaml.safe_dump({"model": model, "data": f"s3://{root}/archive-{night}", "out": out,
                                       "storage_options": s3.storage_options}))
        assert main(["score", "--incremental", "--config", str(job), "--set", f"date=2026-12-0{night}"]) == 0

    capsys.readouterr()
    assert main(["trend", out, "--config", str(access), "--fail-on-drift"]) == 4
    err = capsys.readouterr().err
    assert "2026-12-03" in err.splitlines()[-1] and "2026-12-01" not in err and "2026-12-02" not in err
    trend = pq.read_table(io.BytesIO(fs.cat_file(f"{root}/scores/_trend/trend.parquet"))).to_pylist()
    assert [(r["night"], r["drifted"], r["images"]) for r in trend] == [
        ("2026-12-01", False, 8), ("2026-12-02", False, 8), ("2026-12-03", True, 8)]
    assert fs.exists(f"{root}/scores/_trend/trend.png") and fs.exists(f"{root}/scores/_trend/trend.csv")

    data = f"s3://{root}/archive-1"
    runs = []
    for name, m in (("current", model), ("shadow", candidate)):
        job = tmp_path / f"{name}.yaml"
        job.write_text(yaml.safe_dump({"model": m, "data": data, "out": f"s3://{root}/{name}",
                                       "storage_options": s3.storage_options}))
        assert main(["score", "--config", str(job)]) == 0
        runs.append(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["compare", *runs, "--config", str(access)]) == 0
    folder = capsys.readouterr().out.strip().splitlines()[-1]
    assert folder.startswith(f"{runs[1]}/_compare/")
    flips = pq.read_table(io.BytesIO(fs.cat_file(f"{folder}/flips.parquet")))
    facts = json.loads(fs.cat_file(f"{folder}/compare.json"))
    assert facts["images_compared"] == 8 and facts["flipped"] == flips.num_rows

    assert main(["promote", candidate, "--to", model, "--config", str(access)]) == 0
    pointer = json.loads(fs.cat_file(f"{root}/model/_CURRENT.json"))
    assert pointer["previous"] == "." and fs.exists(f"{root}/model/{pointer['current']}/calibration.json")
    assert main(["promote", "--rollback", "--to", model, "--config", str(access)]) == 0
    assert json.loads(fs.cat_file(f"{root}/model/_CURRENT.json"))["current"] == "."
