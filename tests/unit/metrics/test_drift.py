"""The drift test of a night's acquisition statistics against the calibration normals."""

from __future__ import annotations

import numpy as np

from mdps_ray.metrics.drift import DRIFT_ALPHA, MIN_IMAGES, acquisition_drift


def _normals(rng: np.random.Generator, n: int, brightness: float = 0.5) -> dict[str, np.ndarray]:
    return {"brightness": rng.normal(brightness, 0.005, n), "contrast": rng.normal(0.2, 0.004, n),
            "sharpness": rng.normal(1.0, 0.02, n)}


def test_ordinary_nights_do_not_drift_at_about_the_rate_alpha() -> None:
    rng = np.random.default_rng(0)
    reference = _normals(rng, 30)
    verdicts = [acquisition_drift(_normals(rng, 20), reference)["drifted"] for _ in range(200)]
    assert sum(verdicts) <= 200 * DRIFT_ALPHA * 2  # the KS test alone would already hold this; the shift floor too


def test_a_brighter_night_drifts_on_brightness_alone_and_says_by_how_much() -> None:
    rng = np.random.default_rng(1)
    out = acquisition_drift(_normals(rng, 30, 0.53), _normals(rng, 30), p_values=[0.5, 0.2, 0.9])
    assert out["drifted"] is True and out["n"] == 30
    assert [r.split(" ")[0] for r in out["reasons"]] == ["brightness"]
    assert out["reasons"][0].startswith("brightness +0.03")
    assert out["stats"]["contrast"]["drifted"] is False and out["median_p_value"] == 0.5


def test_a_significant_shift_too_small_to_matter_is_not_drift() -> None:
    rng = np.random.default_rng(2)
    out = acquisition_drift(_normals(rng, 500, 0.51), _normals(rng, 500))  # KS rejects, 0.01 < the 0.02 floor
    assert out["stats"]["brightness"]["ks_p_value"] < 1e-6 and out["drifted"] is False


def test_no_verdict_without_a_reference_or_with_too_few_images() -> None:
    rng = np.random.default_rng(3)
    assert acquisition_drift(_normals(rng, 10), {})["drifted"] is None
    few = {k: v[:MIN_IMAGES - 1] for k, v in _normals(rng, 10, 0.9).items()}
    out = acquisition_drift(few, _normals(rng, 30))
    assert out["drifted"] is None and out["n"] == MIN_IMAGES - 1 and out["median_p_value"] is None


def test_a_calibration_of_a_handful_of_normals_still_sees_a_large_shift_and_not_a_small_one() -> None:
    rng = np.random.default_rng(4)
    reference = _normals(rng, 3)  # 3 normals: KS can never reach α / 3 against 10 images
    bright = acquisition_drift(_normals(rng, 10, 0.6), reference)
    assert bright["drifted"] is True and bright["stats"]["brightness"]["test"] == "shift only"
    assert acquisition_drift(_normals(rng, 10, 0.505), reference)["drifted"] is False
    with_test = acquisition_drift(_normals(rng, 10, 0.6), _normals(rng, 30))
    assert with_test["stats"]["brightness"]["test"] == "ks" and with_test["drifted"] is True
