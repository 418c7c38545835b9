"""One source of defaults and one override path: YAML files, job ``method:`` sections and ``--set``
items are the same deep merge with typed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mdps_ray.cli.commands import build_parser, score_job_config, train_job_config
from mdps_ray.cli.schemas import render_schemas
from mdps_ray.config.method import ConfigError, MdpsConfig, upgrade_stored
from mdps_ray.config.overrides import METHOD_SECTIONS, apply_overrides, as_patch, parse_value, split_overrides
from mdps_ray.config.presets import preset


def _config_show(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    args = build_parser().parse_args(["config", "show", *argv])
    assert args.func(args) == 0
    return json.loads(capsys.readouterr().out)


def test_the_default_is_the_method_the_readme_describes() -> None:
    """README's table of the default against the official code, key by key (the preset is the field defaults)."""
    d = preset("default")
    assert d is not None and d.model_dump() == MdpsConfig().model_dump()
    assert (d.prior.image_size, d.prior.block_out_channels, any(d.prior.attention_levels)) == (64, (16, 32, 64), False)
    assert (d.train.t_min, d.train.t_max, d.train.loss_reduction, d.train.lr, d.train.weight_decay,
            d.train.batch_size, d.train.ema_decay) == (0, 300, "mean", 1e-3, 0.0, 16, 0.999)
    assert (d.sampler.alignment, d.sampler.guidance_norm, d.sampler.masked_sampler) == ("aligned", "per_image",
                                                                                     "eps_mix")
    assert (d.sampler.stage1.start_step, d.sampler.stage2.rho, d.sampler.stage2.n_samples) == (200, 30.0, 2)
    assert (d.sampler.mask.mode, d.sampler.mask.quantile) == ("calibrated", 0.995)
    assert (d.maps.backbone, d.maps.blur_sigma, d.maps.scale, d.maps.crop) == ("none", 1.0, 0.5, None)
    assert (d.maps.stage1_weight, d.maps.normalise) == (0.1, "acquisition")
    assert (d.score.method, d.score.fraction) == ("mean_topk", 0.01)


def test_published_schema_defaults_are_the_default_preset() -> None:
    schema = render_schemas()["mdps_config.v1.schema.json"]
    defaults = preset("default").model_dump(mode="json")
    for section, ref in schema["properties"].items():
        target = schema["$defs"][ref["$ref"].rsplit("/", 1)[-1]] if "$ref" in ref else ref
        for key, prop in target.get("properties", {}).items():
            if "default" in prop:
                assert prop["default"] == defaults[section][key], f"{section}.{key}"


def test_a_nested_yaml_file_changes_only_the_keys_it_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("sampler: {stage2: {rho: 3}}\nmaps: {crop: null}\n")
    from_file = _config_show(capsys, "--config", str(f))
    from_sets = _config_show(capsys, "--set", "sampler.stage2.rho=3", "--set", "maps.crop=null")
    assert from_file == from_sets
    assert from_file["sampler"]["stage1"]["rho"] == 30 and from_file["sampler"]["stage2"]["n_samples"] == 2
    assert from_file["maps"]["crop"] is None


def test_a_file_over_a_paper_preset_keeps_the_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("sampler: {stage2: {rho: 3}}\n")
    got = _config_show(capsys, "--preset", "paper/mvtec/bottle", "--config", str(f))
    want = preset("paper/mvtec/bottle").model_dump(mode="json")
    want["sampler"]["stage2"]["rho"] = 3.0
    assert got == want


def test_job_method_sections_nested_or_dotted_are_the_same(tmp_path: Path) -> None:
    nested, dotted = tmp_path / "n.yaml", tmp_path / "d.yaml"
    nested.write_text(yaml.safe_dump({"data": "d", "out": "o", "method": {"sampler": {"stage2": {"rho": 3}},
                                                                          "maps": {"crop": None}}}))
    dotted.write_text(yaml.safe_dump({"data": "d", "out": "o", "method": {"sampler.stage2.rho": 3, "maps.crop": None}}))
    for make, cmd in ((train_job_config, "train"), (score_job_config, "score")):
        a = make(build_parser().parse_args([cmd, "--config", str(nested), *(["--model", "m"] * (cmd == "score"))]))
        b = make(build_parser().parse_args([cmd, "--config", str(dotted), *(["--model", "m"] * (cmd == "score"))]))
        c = make(build_parser().parse_args([cmd, "--data", "d", "--out", "o", "--set", "sampler.stage2.rho=3",
                                           "--set", "maps.crop=null", *(["--model", "m"] * (cmd == "score"))]))
        cfgs = [apply_overrides(preset("paper/mvtec/bottle"), j.method) for j in (a, b, c)]
        assert cfgs[0] == cfgs[1] == cfgs[2]
        assert cfgs[0].sampler.stage2.rho == 3 and cfgs[0].maps.crop is None
        assert cfgs[0].sampler.mask.mode == "transductive" and cfgs[0].sampler.seed == 42


def test_values_keep_their_types() -> None:
    assert parse_value("null") is None and parse_value("30") == 30 and parse_value("[8, 16]") == [8, 16]
    assert parse_value("2026-12-02") == "2026-12-02"  # a date stays text (job `date` is a string)
    assert as_patch({"a.b": 1, "a": {"c": 2}}) == {"a": {"b": 1, "c": 2}}


def test_an_unquoted_date_override_is_accepted() -> None:
    args = build_parser().parse_args(["score", "--model", "m", "--data", "d", "--out", "o", "--set",
                                      "date=2026-12-02"])
    assert score_job_config(args).date == "2026-12-02"


def test_stored_configs_without_later_keys_keep_their_behaviour() -> None:
    old = MdpsConfig().model_dump(mode="json")
    del old["maps"]["stage1_weight"], old["maps"]["normalise"]
    upgraded = MdpsConfig.model_validate(upgrade_stored(old)).maps
    assert upgraded.stage1_weight == 0.0 and upgraded.normalise == "none"


def test_a_malformed_storage_options_error_does_not_echo_the_secret(capsys: pytest.CaptureFixture[str]) -> None:
    from mdps_ray.cli.commands import main

    secret = "FAKE-SECRET-in-a-string"
    argv = ["score", "--model", "m", "--data", "d", "--out", "o", "--set", f"storage_options=key:{secret}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "storage_options" in err and secret not in err and "\n" not in err.strip()


def test_run_ids_and_dates_that_would_become_paths_are_checked() -> None:
    from mdps_ray.cli.commands import score_job_config

    for bad in ("date=../../x", "date=2026-12-02/../..", "run_id=../x", "run_id=a/b"):
        args = build_parser().parse_args(["score", "--model", "m", "--data", "d", "--out", "o", "--set", bad])
        with pytest.raises(ValueError, match="should match pattern"):
            score_job_config(args)


def test_every_method_section_is_a_method_key_for_the_job_commands() -> None:
    # `mdps train --set tiling.enabled=true` once failed with "tiling: unknown key" (a job key)
    job, method = split_overrides(["tiling.enabled=true", "tiling.read_size=native", "max_steps=3", "maps.scale=1"])
    assert job == ["max_steps=3"]
    assert method == {"tiling.enabled": True, "tiling.read_size": "native", "maps.scale": 1}
    assert {key.split(".")[0] for key in MdpsConfig().model_dump()} == set(METHOD_SECTIONS)
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o", "--set", "tiling.enabled=true"])
    assert train_job_config(args).method == {"tiling": {"enabled": True}}


@pytest.mark.parametrize("item", ["storage_options.secret:hunter2-s3cr3t", "storage_options.key hunter2-s3cr3t",
                                  "token:hunter2-s3cr3t"])
def test_a_malformed_item_is_refused_without_echoing_its_value(item: str) -> None:
    """A colon typed for '=' once echoed the whole item, secret included, to stderr."""
    with pytest.raises(ConfigError) as err:
        apply_overrides(MdpsConfig(), [item])
    assert "hunter2" not in str(err.value) and "KEY=VALUE" in str(err.value)
    assert item.split(":")[0].split(" ")[0] in str(err.value)  # the key part still says which item


def test_an_impossible_date_and_a_credential_that_is_not_text_name_their_key() -> None:
    """"month must be in 1..12" named no key; a key given as a list was a traceback inside s3fs."""
    from mdps_ray.config.jobs import ScoreJobConfig
    from mdps_ray.config.overrides import validate

    base = {"model": "m", "data": "d", "out": "o"}
    with pytest.raises(ConfigError, match=r"date: .*calendar day YYYY-MM-DD \(got '2026-13-45'\)"):
        apply_overrides(validate(ScoreJobConfig, base), ["date=2026-13-45"])
    with pytest.raises(ConfigError) as err:
        apply_overrides(validate(ScoreJobConfig, base), ["storage_options={key: [hunter2, x]}"])
    assert "storage_options.key to be text, got a list" in str(err.value) and "hunter2" not in str(err.value)
    assert apply_overrides(validate(ScoreJobConfig, base), ["date=2026-12-07"]).date == "2026-12-07"
