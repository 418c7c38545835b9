"""The HTML report in a real browser: Debian's chromium, headless, driven by selenium."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from mdps_ray.config.jobs import ScoreJobConfig
from mdps_ray.monitoring.compare import compare_runs
from mdps_ray.orchestration.score_pipeline import run_score_job
from mdps_ray.visualization.report import build_report

pytestmark = pytest.mark.slow
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
HOSTILE = "cat<script>alert(1)"


needs_chromium = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                    reason="Debian chromium + chromium-driver not installed (.ci/run installs them)")


def _chrome(tmp_path: Path) -> Any:
    """Headless chromium through selenium, with its own profile folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2000"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


@needs_chromium
def test_report_renders_every_image_and_escapes_data(ray_local, tiny_model: Path,
                                                     synthetic_root: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    data = tmp_path / HOSTILE
    shutil.copytree(synthetic_root, data)
    summary = run_score_job(ScoreJobConfig(model=str(tiny_model), data=str(data), out=str(tmp_path / "out")))
    report = build_report(summary.run_dir, top=4)
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for p in sorted((data / "test").rglob("*.png"))[:5]:
        shutil.copy(p, folder / f"{p.parent.name}_{p.name}")
    unlabelled = run_score_job(ScoreJobConfig(model=str(tiny_model), data=str(folder), out=str(tmp_path / "out")))

    driver = _chrome(tmp_path)
    try:
        driver.get(Path(report).as_uri())
        rows = pq.read_table(Path(summary.run_dir) / "results").to_pylist()
        n_normal, n_anom = sum(r["label"] == 0 for r in rows), sum(r["label"] == 1 for r in rows)
        shown = 4 + min(4, n_normal) + min(4, n_anom)  # most anomalous, false-positive and miss views
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) == shown * 4  # input, reconstruction, map, ground truth
        decoded = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]);")
        assert all(ok for ok, _, _ in decoded)
        assert {(w, h) for _, w, h in decoded} == {(32, 32)}  # the input's size, not the prior's 16 px
        headings = [e.text for e in driver.find_elements(By.TAG_NAME, "h3")]
        assert headings == ["Most anomalous images", "Highest-scoring normal images", "Lowest-scoring anomalous images"]
        decisions = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "td.decision")]
        assert decisions and all(d.split(" · ")[0] in ("flagged", "not flagged") for d in decisions)
        line = driver.find_element(By.CSS_SELECTOR, "p.threshold").text
        assert "image threshold" in line and "certifies" in line and "90 % confidence" in line, line
        overview = driver.find_elements(By.CSS_SELECTOR, "table.overview tr")
        assert len(overview) == 2  # header + one category
        assert HOSTILE in driver.find_element(By.TAG_NAME, "h2").text  # shown as text, not run
        assert driver.execute_script("return document.querySelectorAll('script').length") == 0
        assert len(driver.find_elements(By.TAG_NAME, "svg")) == 4  # ROC, PRO, histogram, colour key
        assert len(driver.find_elements(By.CSS_SELECTOR, "svg line.tick")) >= 3 * 10  # ticked axes
        assert len(driver.find_elements(By.CSS_SELECTOR, "svg line.threshold")) == 1
        driver.save_screenshot(str(tmp_path / "report.png"))

        driver.get(Path(build_report(unlabelled.run_dir, top=3)).as_uri())
        assert driver.find_element(By.TAG_NAME, "h3").text.startswith("Flagged images (")
        assert "unlabelled" in driver.find_element(By.TAG_NAME, "h2").find_element(By.XPATH, "..").text
        assert not driver.find_elements(By.CSS_SELECTOR, "table.metrics")
        assert not driver.find_elements(By.CSS_SELECTOR, "img[alt='ground truth']")
        assert "label" not in [e.text for e in driver.find_elements(By.CSS_SELECTOR, "table.decisions th")]
    finally:
        driver.quit()
    assert (tmp_path / "report.png").stat().st_size > 10_000


@needs_chromium
def test_the_comparison_page_shows_every_flip_and_escapes_data(ray_local, tiny_model: Path, synthetic_root: Path,
                                                               tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    data = tmp_path / HOSTILE
    shutil.copytree(synthetic_root, data)
    stricter = tmp_path / "stricter"  # the same prior with its threshold at the lowest normal score: flags more
    shutil.copytree(tiny_model, stricter)
    cal = json.loads((stricter / "calibration.json").read_text())
    cal["score_threshold"] = cal["normal_scores"][0]
    (stricter / "calibration.json").write_text(json.dumps(cal))
    a = run_score_job(ScoreJobConfig(model=str(tiny_model), data=str(data), out=str(tmp_path / "a")))
    b = run_score_job(ScoreJobConfig(model=str(stricter), data=str(data), out=str(tmp_path / "b")))
    facts = compare_runs(a.run_dir, b.run_dir, str(tmp_path / "cmp"))
    assert facts["flagged_by_b"] >= 1 and facts["cleared_by_b"] == 0, facts

    driver = _chrome(tmp_path)
    try:
        driver.get((tmp_path / "cmp" / "compare.html").as_uri())
        rows = driver.find_elements(By.CSS_SELECTOR, "table tr")
        assert len(rows) == 1 + facts["flagged_by_b"]  # a header and one row per flip
        decoded = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth]);")
        assert len(decoded) == 3 * facts["flagged_by_b"] and all(ok and w > 0 for ok, w in decoded)
        assert HOSTILE in rows[1].text and driver.execute_script("return document.scripts.length") == 0
        assert [e.text for e in driver.find_elements(By.TAG_NAME, "h2")] == [
            f"flagged by b ({facts['flagged_by_b']})", "cleared by b (0)"]
    finally:
        driver.quit()
