"""Shared fixtures. Server fixtures live in ``tests/servers/fixtures.py``."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.servers.fixtures"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Measurements (``@pytest.mark.measure``) run only with ``LOCKKIT_MEASURE=1``; they
    print figures for the docs rather than assert, so the suite leaves them out."""
    if os.environ.get("LOCKKIT_MEASURE"):
        return
    kept = [item for item in items if item.get_closest_marker("measure") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept
