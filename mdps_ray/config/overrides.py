"""One override path: validation with one-line errors, dotted ``key=value`` overrides, YAML mappings."""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic import ValidationError

from mdps_ray.config.method import ConfigError, _Frozen

METHOD_SECTIONS = ("prior", "train", "sampler", "maps", "score", "runtime")


def split_overrides(overrides: list[str]) -> tuple[list[str], dict[str, str]]:
    """Separate job-level ``key=value`` overrides from method ones (returned as a dict)."""
    job, method = [], {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"expected an override like sampler.stage2.rho=30, got {item!r}")
        if key.split(".", 1)[0] in METHOD_SECTIONS:
            method[key] = value
        else:
            job.append(item)
    return job, method


def format_validation_error(err: ValidationError, source: str = "config") -> str:
    """One line per problem: where, what was expected, what was given, what to do."""
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "<root>"
        got = e.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        msg = e["msg"].removeprefix("Value error, ").replace("Input should be", "expected")
        if e["type"] == "extra_forbidden":
            msg = "unknown key; check its spelling against `mdps config schema`"
        parts.append(f"{where}: {msg}{got_text}")
    return f"invalid {source}: " + "; ".join(parts)


def validate(cls: type[_Frozen], data: dict[str, Any], source: str = "config") -> Any:
    """Build ``cls`` from ``data``; a failure becomes one-line :class:`ConfigError`."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def apply_overrides(config: _Frozen, overrides: list[str]) -> Any:
    """Apply dotted ``key=value`` overrides (values parsed as YAML) and re-validate."""
    data = config.model_dump(mode="json")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected an override like sampler.stage2.rho=30, got {item!r}")
        node = data
        *path, leaf = key.strip().split(".")
        for part in path:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown config section {part!r} in override {item!r}")
            node = node[part]
        node[leaf] = yaml.safe_load(raw)
    return validate(type(config), data, source="override")


def flatten_overrides(data: dict[str, Any], prefix: str = "") -> list[str]:
    """A nested mapping (a YAML config file) as dotted ``key=value`` overrides, leaves only."""
    out: list[str] = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(flatten_overrides(value, f"{dotted}."))
        else:
            out.append(f"{dotted}={json.dumps(value)}")
    return out
