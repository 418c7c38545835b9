"""Every manifest in infra/ parses, has its required fields, and its entrypoint's arguments are
accepted by the job's own argument parser and configuration validation."""

from __future__ import annotations

import ast
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from mdps_ray.cli.commands import build_parser, score_job_config, train_job_config

INFRA = Path(__file__).resolve().parents[2] / "infra"
JOBS = INFRA.parent / "jobs"


def _job_command(name: str) -> str:
    """The `mdps` command a job script delegates to (its whole body is ``main([name, *argv])``)."""
    tree = ast.parse((JOBS / f"{name}.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "main"]
    assert len(calls) == 1 and isinstance(calls[0].args[0], ast.List), f"jobs/{name}.py must call main([...])"
    first = calls[0].args[0].elts[0]
    assert isinstance(first, ast.Constant)
    return str(first.value)


def _check_entrypoint(command: str) -> None:
    words = shlex.split(command)
    script = next(w for w in words if w.startswith("jobs/") and w.endswith(".py"))
    argv = words[words.index(script) + 1 :]
    name = Path(script).stem
    command = _job_command(name)
    assert command == name
    args = build_parser().parse_args([command, *argv])
    (score_job_config if name == "score" else train_job_config)(args)


def _check_after(steps: list[str], nightly: bool) -> None:
    """What runs once the night is committed: `mdps` commands the CLI accepts; a nightly ends with a drift alert."""
    if nightly:
        assert any(s.split()[:2] == ["mdps", "trend"] and "--fail-on-drift" in s for s in steps), steps
    for step in steps:
        words = shlex.split(step.replace("$(date -u +%F)", "2026-12-07"))  # what the shell substitutes
        assert words[0] == "mdps", step
        build_parser().parse_args(words[1:])


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(INFRA.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs.append((path.name, doc))
    return docs


def test_every_manifest_is_found() -> None:
    kinds = {doc.get("kind") for _, doc in _manifests()}
    assert {"RayCluster", "RayJob", "CronJob", "RayCronJob"} <= kinds
    assert any(name == "cluster.yaml" for name, _ in _manifests())


@pytest.mark.parametrize(("name", "doc"), _manifests(), ids=[n for n, _ in _manifests()])
def test_manifest_fields_and_entrypoints(name: str, doc: dict[str, Any]) -> None:
    kind = doc.get("kind")
    if kind is None:  # the Ray cluster launcher
        for key in ("cluster_name", "provider", "available_node_types", "head_node_type"):
            assert key in doc, key
        assert doc["head_node_type"] in doc["available_node_types"]
        return
    assert doc["apiVersion"] and doc["metadata"]["name"]
    spec = doc["spec"]
    if kind == "RayCluster":
        assert spec["headGroupSpec"]["template"]["spec"]["containers"]
        for group in spec["workerGroupSpecs"]:
            limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
            assert "nvidia.com/gpu" in limits
    elif kind == "RayJob":
        assert spec["rayClusterSpec"]["headGroupSpec"]
        _check_entrypoint(spec["entrypoint"])
    elif kind == "CronJob":
        assert spec["schedule"] and spec["concurrencyPolicy"] == "Forbid"
        container = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        command = " ".join(container["args"])
        assert "--submission-id" in command
        submit, *after = command.split(" && ")
        _check_entrypoint(submit.split(" -- ", 1)[1])
        _check_after(after, nightly="--incremental" in submit)
    elif kind == "RayCronJob":
        assert spec["schedule"]
        score, *after = spec["rayJobTemplate"]["entrypoint"].split(" && ")
        _check_entrypoint(score)
        _check_after(after, nightly="--incremental" in score)
    else:
        pytest.fail(f"unexpected kind {kind} in {name}")


def test_dockerfile_pins_and_runs_as_non_root() -> None:
    text = (INFRA / "Dockerfile").read_text()
    assert "USER ray" in text and "mdps weights install" in text
    # the torch wheel carries its CUDA; a CUDA base image of another version would not match it
    pinned = next(line for line in (INFRA.parent / "pyproject.toml").read_text().splitlines() if '"torch==' in line)
    assert "2.14.1" in pinned and "FROM nvidia/cuda" not in text and ">= 580 for CUDA 13" in text
