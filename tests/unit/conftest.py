"""The unit tier: fast tests that never start Ray (each test is checked; the integration tier may)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


def _ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


@pytest.fixture(autouse=True)
def no_ray_cluster_started() -> Iterator[None]:
    before = _ray_running()
    yield
    assert before or not _ray_running(), "a unit test started Ray: move it to tests/integration/"
