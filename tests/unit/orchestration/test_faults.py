"""Fault injection is a test-only channel: absent from the published schemas and from --help."""

from __future__ import annotations

import json
import re

import pytest

from mdps_ray.cli.commands import build_parser
from mdps_ray.cli.schemas import render_schemas
from mdps_ray.orchestration.faults import ENV, Faults


def test_no_published_schema_or_help_mentions_fault_hooks(capsys: pytest.CaptureFixture[str]) -> None:
    text = json.dumps(render_schemas())
    for word in ("faults", "kill_actor", "kill_driver", "kill_worker", "Fault"):
        assert not re.search(rf"\b{word}", text), word
    for command in ("score", "train"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        assert "kill" not in capsys.readouterr().out


def test_faults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Faults.from_env() == Faults()
    monkeypatch.setenv(ENV, json.dumps({"kill_actor_after_batches": 2}))
    assert Faults.from_env().kill_actor_after_batches == 2
    monkeypatch.setenv(ENV, json.dumps({"kill_everything": 1}))
    with pytest.raises(ValueError, match="expected MDPS_FAULTS keys"):
        Faults.from_env()
