"""Smoke tests: the PostgreSQL fixture serves, keeps its data across a restart, and a
paused server answers nothing until resumed."""

from __future__ import annotations

import time
import uuid

import asyncpg
import pytest

from ._base import ServerError
from .postgres import psql

pytestmark = pytest.mark.postgres


async def test_round_trip(postgres_server) -> None:
    connection = await asyncpg.connect(postgres_server.url)
    try:
        assert await connection.fetchval("SELECT current_database()") == "lockkit"
        assert await connection.fetchval("SHOW listen_addresses") == "127.0.0.1"
    finally:
        await connection.close()


@pytest.mark.fault
def test_private_server_restarts_with_its_data_and_pauses(servers) -> None:
    server = servers.postgres()
    table = f"smoke_{uuid.uuid4().hex[:8]}"
    psql(server.url, f"CREATE TABLE {table} (v int); INSERT INTO {table} VALUES (7)")
    server.restart()
    assert psql(server.url, f"SELECT v FROM {table}") == "7"
    server.pause()
    started = time.monotonic()
    with pytest.raises(ServerError, match="timed out"):
        psql(server.url, "SELECT 1", timeout=1.5)
    assert time.monotonic() - started < 5
    server.resume()
    assert psql(server.url, "SELECT 1") == "1"
