"""The acceptance tier: README.md walked as a user would (its fenced commands run in a fresh copy of the
checkout, its Python snippet executed, the outputs read with pandas, pyarrow, DuckDB and polars, a
three-night nightly story on a real S3 API). Marked ``integration`` and ``acceptance`` (CI runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.acceptance)
