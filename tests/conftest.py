"""Shared fixtures. Server fixtures live in ``tests/servers/fixtures.py``."""

from __future__ import annotations

pytest_plugins = ["tests.servers.fixtures"]
