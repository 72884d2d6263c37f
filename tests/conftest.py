"""Test-session hooks."""
from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Soak tests run first, in a fresh process: what earlier tests leave behind (their threads' malloc arenas,
    their garbage) makes the resident memory swing by tens of MiB and would drown the trend they measure."""
    items.sort(key=lambda item: item.get_closest_marker("soak") is None)  # stable: the rest keep their order
