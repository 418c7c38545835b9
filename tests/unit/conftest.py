"""The unit tier: milliseconds-to-seconds tests that never start Ray (checked when the tier ends)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def no_ray_cluster_started() -> Iterator[None]:
    yield
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized(), "a unit test started Ray: move it to tests/integration/"
