"""Configuration: validation messages, presets, overrides, hashes and published schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mdps_ray.cli.schemas import SCHEMA_DIR, render_schemas
from mdps_ray.config.method import ConfigError, MdpsConfig, PriorConfig
from mdps_ray.config.overrides import apply_overrides, validate
from mdps_ray.config.presets import preset, preset_names


def test_unknown_key_is_one_clear_line() -> None:
    with pytest.raises(ConfigError) as err:
        validate(MdpsConfig, {"sampler": {"stage2": {"rhoo": 3}}})
    msg = str(err.value)
    assert "sampler.stage2.rhoo" in msg and "unknown key" in msg and "\n" not in msg


def test_out_of_range_value_names_expected_and_given() -> None:
    with pytest.raises(ConfigError, match=r"sampler\.stage2\.rho: expected greater than or equal to 0 \(got -1\)"):
        apply_overrides(MdpsConfig(), ["sampler.stage2.rho=-1"])


def test_overrides_parse_yaml_values_and_revalidate() -> None:
    cfg = apply_overrides(MdpsConfig(), ["sampler.stage2.rho=30", "maps.crop=null", "sampler.mask.mode=none"])
    assert cfg.sampler.stage2.rho == 30.0 and cfg.maps.crop is None and cfg.sampler.mask.mode == "none"
    with pytest.raises(ConfigError, match="expected an override like"):
        apply_overrides(MdpsConfig(), ["sampler.stage2.rho"])
    with pytest.raises(ConfigError, match="nope: unknown key"):
        apply_overrides(MdpsConfig(), ["nope.x=1"])


def test_configs_are_frozen_and_hash_stably() -> None:
    cfg = MdpsConfig()
    with pytest.raises(Exception, match="frozen"):
        cfg.prior.image_size = 32  # type: ignore[misc]
    assert cfg.digest() == "a2508046dfda213a"  # pinned: a change re-scores every committed row of the default
    assert cfg.digest() != apply_overrides(cfg, ["sampler.seed=1"]).digest()


def test_prior_config_checks_consistency() -> None:
    with pytest.raises(ValueError, match="one attention flag per level"):
        PriorConfig(block_out_channels=(8, 16), attention_levels=(False,), norm_num_groups=4)
    with pytest.raises(ValueError, match="divisible by norm_num_groups"):
        PriorConfig(block_out_channels=(8, 12), attention_levels=(False, False), norm_num_groups=8)


def test_presets_cover_the_18_released_configurations() -> None:
    names = preset_names()
    assert len(names) == 19 and "default" in names
    for name in names:
        preset(name)
    bottle = preset("paper/mvtec/bottle")
    assert (bottle.sampler.stage1.start_step, bottle.sampler.stage1.rho) == (200, 50)
    assert (bottle.sampler.stage2.start_step, bottle.sampler.stage2.rho) == (200, 100)
    assert bottle.sampler.mask.mode == "transductive" and bottle.sampler.mask.fraction == 0.12
    assert bottle.maps.pixel_weight == 7 and bottle.maps.crop == 224 and bottle.score.k == 500
    assert bottle.maps.stage1_weight == 0 and preset("default").maps.stage1_weight == 0.1
    assert preset("paper/mvtec/carpet").sampler.mask.mode == "none"
    assert preset("paper/btad/01").maps.crop is None
    with pytest.raises(ConfigError, match="expected a preset"):
        preset("paper/mvtec/unknown")


def test_published_schemas_match_the_models() -> None:
    rendered = render_schemas()
    on_disk = {p.name: json.loads(p.read_text()) for p in Path(SCHEMA_DIR).glob("*.json")}
    assert set(rendered) <= set(on_disk), "run `mdps config schema --write` to regenerate schemas/"
    for name, schema in rendered.items():
        assert on_disk[name] == schema, f"schemas/{name} is stale: run `mdps config schema --write`"


def test_fp16_with_guidance_is_refused_and_tf32_is_off_without_moving_hashes() -> None:
    with pytest.raises(ConfigError, match=r"runtime\.precision=bf16"):
        apply_overrides(MdpsConfig(), ["runtime.precision=fp16"])
    unguided = ["sampler.stage1.rho=0", "sampler.stage2.rho=0", "runtime.precision=fp16"]
    assert apply_overrides(MdpsConfig(), unguided).runtime.precision == "fp16"
    assert MdpsConfig().runtime.tf32 is False
    # the key added later leaves hashes of committed rows and calibrations as they were, unless it is set
    before = apply_overrides(MdpsConfig(), ["maps.normalise=none"])  # the default before maps.normalise existed
    assert before.digest() == "5bfaf7c4895af9f6"
    assert MdpsConfig().digest() != before.digest()  # the relative maps are another method: rows are re-scored
    assert apply_overrides(before, ["runtime.tf32=true"]).digest() != before.digest()


def test_a_calibration_made_before_maps_normalise_existed_is_not_called_stale() -> None:
    """method_hash leaves default-valued new keys out as config_hash does: a raw-map calibration written before
    maps.normalise existed warned "recalibrate" on every load."""
    import hashlib
    import json

    from mdps_ray.config.method import method_hash
    from mdps_ray.method.calibration import Calibration, stale_calibration

    raw = apply_overrides(MdpsConfig(), ["maps.normalise=none"])
    maps_then = {k: v for k, v in raw.maps.model_dump(mode="json").items() if k != "normalise"}

    def part_hash(data: dict) -> str:
        return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]

    # the hash the older code wrote: the four sections' JSON, maps without the key it did not have yet
    then = "|".join(part_hash(d) for d in (raw.prior.model_dump(mode="json"), raw.sampler.model_dump(mode="json"),
                                             maps_then, raw.score.model_dump(mode="json")))
    written = hashlib.sha256(then.encode()).hexdigest()[:16]
    assert method_hash(raw.prior, raw.sampler, raw.maps, raw.score) == written
    old = Calibration(0.1, 0.2, 0.995, 0.01, 4, method_hash=written)
    assert stale_calibration(old, raw, "m") is None
    assert stale_calibration(old, MdpsConfig(), "m") is not None  # relative maps: other thresholds, recalibrate
