"""The HTML report in a real browser: Debian's chromium, headless, driven by selenium."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mdps_ray.config.jobs import ScoreJobConfig
from mdps_ray.orchestration.score_pipeline import run_score_job
from mdps_ray.visualization.report import build_report

pytestmark = pytest.mark.slow
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
HOSTILE = "cat<script>alert(1)"


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                    reason="Debian chromium + chromium-driver not installed (.ci/run installs them)")
def test_report_renders_every_image_and_escapes_data(ray_local, tiny_model: Path,
                                                     synthetic_root: Path, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    data = tmp_path / HOSTILE
    shutil.copytree(synthetic_root, data)
    summary = run_score_job(ScoreJobConfig(model=str(tiny_model), data=str(data), out=str(tmp_path / "out")))
    report = build_report(summary.run_dir, top=4)

    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(Path(report).as_uri())
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) == 4 * 4  # 4 gallery rows × (input, reconstruction, map, ground truth)
        decoded = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0);")
        assert all(decoded)
        overview = driver.find_elements(By.CSS_SELECTOR, "table.overview tr")
        assert len(overview) == 2  # header + one category
        assert len(driver.find_elements(By.CSS_SELECTOR, "table.gallery tr")) == 1 + 4
        assert HOSTILE in driver.find_element(By.TAG_NAME, "h2").text  # shown as text, not run
        assert driver.execute_script("return document.querySelectorAll('script').length") == 0
        assert len(driver.find_elements(By.TAG_NAME, "svg")) == 3  # ROC, PRO, histogram
        driver.save_screenshot(str(tmp_path / "report.png"))
    finally:
        driver.quit()
    assert (tmp_path / "report.png").stat().st_size > 10_000
