"""The quality harness end to end on a tiny generated dataset: table shape and metric ranges."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from benchmarks import quality

pytestmark = pytest.mark.slow
TINY = ["prior.image_size=32", "prior.block_out_channels=[8, 16]", "prior.attention_levels=[false, false]",
        "prior.norm_num_groups=4", "prior.attention_head_dim=8", "sampler.stage1.n_samples=1",
        "sampler.stage2.n_samples=1", "sampler.stage1.start_step=60", "sampler.stage2.start_step=60"]


def test_harness_writes_one_row_per_variant_with_metrics_in_range(synthetic_root: Path, tmp_path: Path) -> None:
    variants = ["default", "no_guidance", "random_trunk", "baseline"]
    args = ["--data", str(synthetic_root.parent), "--categories", synthetic_root.name, "--budget-minutes", "0.05",
            "--variants", *variants, "--out", str(tmp_path)]
    for item in TINY:
        args += ["--set", item]
    code = quality.main(args)
    with open(tmp_path / "quality.csv") as f:
        rows = list(csv.DictReader(f))
    check_baseline_flags(rows, code)
    assert [r["variant"] for r in rows] == variants and {r["category"] for r in rows} == {synthetic_root.name}
    for r in rows:
        for key in ("image_auroc", "pixel_auroc", "aupro", "f1_max", "ap"):
            assert 0.0 <= float(r[key]) <= 1.0, (r["variant"], key)
        assert float(r["seconds_per_image"]) > 0
        assert math.isnan(float(r["psnr_normal"])) == (r["variant"] == "baseline")
    assert [r["what_it_is"] for r in rows] == [quality.DESCRIPTIONS[v] for v in variants]
    md = (tmp_path / "quality.md").read_text()
    assert md.count("\n| ") == len(variants) + 1  # header + one line per variant
    assert f"- {synthetic_root.name}: prior trained " in md and f"{len(variants)} variants;" in md


def check_baseline_flags(rows: list[dict[str, str]], code: int) -> None:
    """Every row carries the baseline's AUROCs; the flag names what it does not beat; exit 3 iff the default's does."""
    for r in rows:
        assert r["baseline_image_auroc"] == rows[0]["baseline_image_auroc"] != "nan"
        short = [k for k in ("image", "pixel") if not float(r[f"{k}_auroc"]) > float(r[f"baseline_{k}_auroc"])]
        expected = "-" if r["variant"] == "baseline" else "ok" if not short else "BELOW BASELINE: " + ", ".join(short)
        assert r["vs_baseline"] == expected, r
    default_below = any(r["variant"] == "default" and r["vs_baseline"] != "ok" for r in rows)
    assert code == (3 if default_below else 0)


def test_a_tiled_prior_trains_on_crops_and_scores_by_tiles_with_its_variants(synthetic_root: Path,
                                                                             tmp_path: Path) -> None:
    variants = ["default", "untiled", "tiles_smooth"]
    args = ["--data", str(synthetic_root.parent), "--categories", synthetic_root.name, "--budget-minutes", "0.05",
            "--variants", *variants, "--out", str(tmp_path), "--set", "tiling.enabled=true",
            "--set", "tiling.read_size=64"]
    for item in TINY:
        args += ["--set", item]
    code = quality.main(args)
    with open(tmp_path / "quality.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == variants
    check_baseline_flags(rows, code)
    saved = (tmp_path / "models" / synthetic_root.name / "mdps.json").read_text()
    assert '"enabled": true' in saved and '"read_size": 64' in saved
    tiled, squeezed = (float(rows[i]["seconds_per_image"]) for i in (0, 1))
    assert tiled > squeezed  # 64 px read in 32 px tiles at stride 24: 9 tiles against one squeezed image


def test_per_position_priors_train_and_score_in_the_harness(synthetic_root: Path, tmp_path: Path) -> None:
    args = ["--data", str(synthetic_root.parent), "--categories", synthetic_root.name, "--max-steps", "2",
            "--variants", "default", "baseline", "--out", str(tmp_path), "--set", "tiling.enabled=true",
            "--set", "tiling.read_size=64", "--set", "tiling.stride=32", "--set", "tiling.prior=per_position"]
    for item in TINY:
        args += ["--set", item]
    code = quality.main(args)
    with open(tmp_path / "quality.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == ["default", "baseline"]
    check_baseline_flags(rows, code)
    positions = tmp_path / "models" / synthetic_root.name / "positions"
    assert sorted(p.name for p in positions.iterdir()) == ["0", "1", "2", "3"]  # 64 px in 32 px tiles at stride 32
    assert "trained 2+2+2+2 steps (4 prior(s))" in (tmp_path / "quality.md").read_text()


def test_every_variant_has_a_description() -> None:
    assert set(quality.DESCRIPTIONS) == {*quality.VARIANTS, "baseline"}
