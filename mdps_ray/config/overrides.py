"""One override path: every way a user changes a config goes through :func:`apply_overrides`.

A preset or stored config, then a YAML/JSON file, then a job's ``method:`` section, then
``--set key=value`` items: each is a *patch* — a mapping whose keys may be nested sections
(``{sampler: {stage2: {rho: 3}}}``) or dotted paths (``{"sampler.stage2.rho": 3}``) — deep-merged
into the config's JSON dump and validated once. A partial section changes only the keys it
names; values keep their types (a YAML ``null`` is None, never the text "None").
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from mdps_ray.config.method import ConfigError, MdpsConfig

# The method's sections (a `--set` item starting with one is a method key, else a job key): every field of
# MdpsConfig, so a section added there (tiling) is settable from `mdps train` / `mdps score` at once.
METHOD_SECTIONS = tuple(MdpsConfig.model_fields)
# Keys whose values an error message never echoes (storage options carry credentials).
SECRET_WORDS = ("key", "secret", "token", "password", "credential")
M = TypeVar("M", bound=BaseModel)


def parse_value(raw: str) -> Any:
    """A ``--set`` value as YAML (``30`` → 30, ``null`` → None, ``[8, 16]`` → a list); dates stay text."""
    try:
        value = yaml.safe_load(raw)
    except (yaml.YAMLError, ValueError):  # ValueError: a date-like text that is no date (2026-13-45)
        return raw
    return raw if isinstance(value, _dt.date | _dt.datetime) else value


def parse_item(item: str) -> tuple[str, Any]:
    """``"a.b=v"`` → ``("a.b", parsed v)``; a malformed item is a one-line error."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"expected an override like sampler.stage2.rho=30 (KEY=VALUE), got {_shown(item)}")
    return key.strip(), parse_value(raw)


def _shown(item: str) -> str:
    """How a malformed item is named in its error: its leading key-like part only, cut after any secret-looking word
    (a value typed without '=' may follow it directly)."""
    text = item.strip()
    found = re.match(r"[\w.\-]*", text)
    lead = found[0] if found else ""
    secret = re.search("|".join(SECRET_WORDS), lead, re.IGNORECASE)
    if secret:
        lead = lead[:secret.end()]
    return repr(text) if lead == text and not secret else f"{lead!r} and more (not shown: it may hold a secret)"


def as_patch(overrides: Sequence[str] | Mapping[str, Any]) -> dict[str, Any]:
    """``--set`` items or a (possibly dotted, possibly nested) mapping as one nested patch."""
    items = [parse_item(i) for i in overrides] if not isinstance(overrides, Mapping) else list(overrides.items())
    patch: dict[str, Any] = {}
    for key, value in items:
        *path, leaf = str(key).split(".")
        node = patch
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"expected {part!r} to be a section in override {key!r}, got a value")
        if isinstance(value, Mapping):  # a nested section: merge with what dotted keys already put there
            base = node.get(leaf)
            node[leaf] = deep_merge(base if isinstance(base, dict) else {}, as_patch(value))
        else:
            node[leaf] = value
    return patch


def deep_merge(base: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``patch`` merged in: mappings recursively, everything else replaced."""
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(config: M, overrides: Sequence[str] | Mapping[str, Any], source: str = "override") -> M:
    """``config`` with the patch deep-merged in, validated once (unknown keys are errors)."""
    patch = as_patch(overrides)
    if not patch:
        return config
    data = config.model_dump(mode="json")
    _check_sections(data, patch, "")
    return validate(type(config), deep_merge(data, patch), source=source)


def _check_sections(data: Mapping[str, Any], patch: Mapping[str, Any], prefix: str) -> None:
    """A patch may not descend into a key the config does not have as a section."""
    for key, value in patch.items():
        if isinstance(value, Mapping) and key in data and not isinstance(data[key], dict) and data[key] is not None:
            raise ConfigError(f"unknown config section {prefix}{key!r}: it is a value, not a section")
        if isinstance(value, Mapping) and isinstance(data.get(key), dict):
            _check_sections(data[key], value, f"{prefix}{key}.")


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """Separate job-level ``key=value`` items from method ones (returned as a typed dotted mapping)."""
    job: list[str] = []
    method: dict[str, Any] = {}
    for item in overrides:
        key, value = parse_item(item)
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
        secret = any(str(p) == "storage_options" or any(s in str(p).lower() for s in SECRET_WORDS) for p in e["loc"])
        got_text = "" if isinstance(got, dict) else " (value not shown)" if secret else f" (got {got!r})"
        msg = e["msg"].removeprefix("Value error, ").replace("Input should be", "expected")
        if e["type"] == "extra_forbidden":
            msg = "unknown key; check its spelling against `mdps config schema`"
        parts.append(f"{where}: {msg}{got_text}")
    return f"invalid {source}: " + "; ".join(parts)


def validate(cls: type[M], data: Mapping[str, Any], source: str = "config") -> M:
    """Build ``cls`` from ``data``; a failure becomes one-line :class:`ConfigError`."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None
