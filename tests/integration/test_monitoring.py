"""Night by night on local disk: three nights scored (the third brightened), `mdps trend` (drift by date, exit 4
under --fail-on-drift, only for that night), a candidate compared over the same images and promoted, a
rollback; the outputs opened with pandas and DuckDB."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from PIL import Image, ImageEnhance

from mdps_ray.cli.commands import DRIFT_EXIT, main
from mdps_ray.storage.promotion import POINTER

pytestmark = pytest.mark.integration


def _copy(paths: list[Path], dest: Path, brighten: float | None = None) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for p in paths:
        img = Image.open(p).convert("RGB")
        if brighten:
            img = ImageEnhance.Brightness(img).enhance(brighten)
        img.save(dest / (("bright-" if brighten else "") + p.parent.name + "-" + p.name))


def _score(args: list[str], capsys: pytest.CaptureFixture[str], warned: list[str] | None = None) -> str:
    code = main(["score", *args])
    printed = capsys.readouterr()
    out = printed.out.strip().splitlines()
    assert code == 0, out
    if warned is not None:
        warned += [line for line in printed.err.splitlines() if line.startswith("mdps: warning: these images drifted")]
    return out[-1]


def test_three_nights_a_drift_a_comparison_and_a_promotion(ray_local: None, tiny_model: Path,
                                                           candidate_model: Path,
                                                           synthetic_root: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    current = tmp_path / "models" / "bottle"  # the model URI the nightly job reads
    shutil.copytree(tiny_model, current)
    archive, out = tmp_path / "archive", tmp_path / "scores"
    train = sorted((synthetic_root / "train" / "good").glob("*.png"))
    tests = sorted((synthetic_root / "test").rglob("*.png"))
    nightly = ["--incremental", "--model", str(current), "--data", str(archive), "--out", str(out)]
    _copy(tests, archive)  # night 1: the test split, good and defective
    warned: list[str] = []
    _score([*nightly, "--set", "date=2026-12-01"], capsys, warned)
    _copy(train[6:16], archive)  # night 2: more ordinary images
    _score([*nightly, "--set", "date=2026-12-02"], capsys, warned)
    assert warned == []
    _copy(train[16:24], archive, brighten=1.4)  # night 3: a lamp changed
    night3 = _score([*nightly, "--set", "date=2026-12-03"], capsys, warned)
    assert len(warned) == 1 and "category archive: brightness +" in warned[0]  # said when the night is scored

    assert main(["trend", str(out)]) == 0  # without --fail-on-drift: reported, exit 0
    printed = capsys.readouterr()
    assert "night 2026-12-03 category archive" in printed.err and "brightness +" in printed.err
    assert "2026-12-01" not in printed.err and "2026-12-02" not in printed.err
    assert main(["trend", str(out), "--fail-on-drift"]) == DRIFT_EXIT
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "mdps: error: 1 night(s) drifted from the calibration normals: 2026-12-03", last
    assert main(["trend", str(out), "--fail-on-drift", "--since", "2026-12-04"]) == 0  # no night since
    assert main(["trend", str(out), "--fail-on-drift", "--since", "2026-12-01", "--dir", str(tmp_path / "t")]) == 4
    capsys.readouterr()

    trend = pd.read_parquet(out / "_trend" / "trend.parquet")
    assert list(trend["night"]) == ["2026-12-01", "2026-12-02", "2026-12-03"]
    assert list(trend["drifted"]) == [False, False, True] and list(trend["images"]) == [len(tests), 10, 8]
    assert trend["brightness_shift"].iloc[2] > 0.02 > abs(trend["brightness_shift"].iloc[1])
    by_duckdb = duckdb.sql(f"select night, drifted from read_csv_auto('{out / '_trend' / 'trend.csv'}') "
                           "order by night").fetchall()
    assert [(str(n), d) for n, d in by_duckdb] == [("2026-12-01", False), ("2026-12-02", False), ("2026-12-03", True)]
    assert Image.open(out / "_trend" / "trend.png").size[0] > 0 and (tmp_path / "t" / "trend.png").exists()

    # shadow re-scoring: the candidate over the same archive, compared with the current model's run
    shadow = _score(["--model", str(candidate_model), "--data", str(archive), "--out", str(tmp_path / "shadow")],
                    capsys)
    current_all = _score(["--model", str(current), "--data", str(archive), "--out", str(tmp_path / "cur")], capsys)
    assert main(["compare", current_all, shadow, "--out", str(tmp_path / "cmp")]) == 0
    said = capsys.readouterr().out
    facts = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    n = len(tests) + 18
    assert facts["images_compared"] == n and facts["only_in_a"] == facts["only_in_b"] == 0
    flips = pd.read_parquet(tmp_path / "cmp" / "flips.parquet")
    a = pd.read_parquet(Path(current_all) / "results").set_index("image_id")
    b = pd.read_parquet(Path(shadow) / "results").set_index("image_id")
    expected = sorted(i for i in a.index if a.loc[i, "is_anomalous"] != b.loc[i, "is_anomalous"])
    assert sorted(flips["image_id"]) == expected and facts["flipped"] == len(expected)
    assert (flips["direction"] == "flagged_by_b").sum() == facts["flagged_by_b"] == int(
        (~a["is_anomalous"] & b.loc[a.index, "is_anomalous"]).sum())
    assert f"{n} images in both runs" in said
    assert a.loc[:, "model_digest"].nunique() == 1 and (a["model_digest"] != b["model_digest"]).all()
    assert "<h1>mdps compare</h1>" in (tmp_path / "cmp" / "compare.html").read_text()

    # promote: the nightly's --model now names the candidate; a rollback returns to the model it replaced
    assert main(["promote", str(candidate_model), "--to", str(current)]) == 0
    capsys.readouterr()
    pointer = json.loads((current / POINTER).read_text())
    assert pointer["previous"] == "." and (current / pointer["current"] / "mdps.json").exists()
    _copy(train[:3], archive / "more")
    night4 = _score([*nightly, "--set", "date=2026-12-04"], capsys)
    rows4 = pd.read_parquet(Path(night4) / "results")
    # a new model digest: the nightly skip keys on it, so the whole archive is scored again by the candidate
    assert len(rows4) == n + 3 and set(rows4["model_digest"]) == set(b["model_digest"])
    record = json.loads((Path(night4) / "run.json").read_text())
    assert set(record["calibration"]["normal_scores"]) == set(
        json.loads((candidate_model / "calibration.json").read_text())["normal_scores"])
    assert main(["promote", "--rollback", "--to", str(current)]) == 0
    capsys.readouterr()
    again = _score(["--model", str(current), "--data", str(archive / "more"), "--out", str(tmp_path / "rb")], capsys)
    assert set(pd.read_parquet(Path(again) / "results")["model_digest"]) == set(a["model_digest"])
    assert Path(night3).name in {p.name for p in out.iterdir()}
