"""The integration tier: every test below this folder is marked ``integration`` (real Ray, real S3,
real browser), so ``pytest -m "not integration"`` is the fast unit tier."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)
