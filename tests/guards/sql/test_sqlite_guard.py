"""SqliteGuard beyond the conformance suite: the caller's own statements under the
fence in the caller's transaction, holders on separate connections, SQLAlchemy."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import pytest

from lockkit import FencingToken, LockUsageError, StaleTokenError
from lockkit.guards import TEXT
from lockkit.guards.sql import SqliteGuard

RESOURCE = "orders:1"


def token(value: int, owner: str = "a") -> FencingToken:
    return FencingToken(value, name="orders-lock", backend="test", owner=owner)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    database = tmp_path / "app.db"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT, tokens TEXT)")
        db.execute("INSERT INTO orders VALUES (1, 'new', '')")
    db.close()
    return database


@pytest.fixture
async def guard(path: Path) -> AsyncIterator[SqliteGuard[Any]]:
    async with SqliteGuard(path) as guard:
        await guard.create_table()
        yield guard


async def status(path: Path) -> str:
    async with aiosqlite.connect(path) as db:
        rows = list(await db.execute_fetchall("SELECT status FROM orders WHERE id = 1"))
    return str(rows[0][0])


async def test_own_statement_good_stale_and_rolled_back(path, guard) -> None:
    async with aiosqlite.connect(path) as db:  # Python's default: BEGIN before a write
        await guard.fence_in(db, RESOURCE, token=token(5))
        await db.execute("UPDATE orders SET status = 'shipped' WHERE id = 1")
        await db.commit()
        assert (await status(path)) == "shipped"

        ran = False
        with pytest.raises(StaleTokenError) as caught:
            await guard.fence_in(db, RESOURCE, token=token(4, owner="old"))
            ran = True
        await db.rollback()
        assert not ran and int(caught.value.offered) == 4 and caught.value.current == 5

        await guard.fence_in(db, RESOURCE, token=token(9, owner="b"))
        await db.execute("UPDATE orders SET status = 'cancelled' WHERE id = 1")
        await db.rollback()
    assert (await status(path)) == "shipped"
    fence = await guard.fence(RESOURCE)
    assert fence is not None and (fence.token, fence.owner) == (5, "a"), "a rollback kept the fence"


async def test_autocommit_connection_needs_begin(path, guard) -> None:
    async with aiosqlite.connect(path, isolation_level=None) as db:
        with pytest.raises(LockUsageError, match="BEGIN"):
            await guard.fence_in(db, RESOURCE, token=token(1))
        await db.execute("BEGIN IMMEDIATE")
        await guard.fence_in(db, RESOURCE, token=token(1))
        await db.execute("COMMIT")
    assert (await guard.fence(RESOURCE)) is not None


async def test_a_second_holder_waits_for_the_first_transaction(path, guard) -> None:
    async with aiosqlite.connect(path) as first, aiosqlite.connect(path, timeout=10) as second:
        await guard.fence_in(first, RESOURCE, token=token(8, owner="first"))
        outcome: list[str] = []

        async def second_holder() -> None:
            try:
                await guard.fence_in(second, RESOURCE, token=token(7, owner="second"))
            except StaleTokenError:
                outcome.append("refused")
                await second.rollback()
            else:
                outcome.append("accepted")

        async with anyio.create_task_group() as tg:
            tg.start_soon(second_holder)
            await anyio.sleep(0.3)
            assert outcome == [], "the second holder did not wait for the first"
            await first.execute("UPDATE orders SET status = 'first' WHERE id = 1")
            await first.commit()
    assert outcome == ["refused"]
    assert (await status(path)) == "first"


async def test_holders_on_separate_connections_apply_tokens_in_order(path, guard) -> None:
    values = list(range(1, 21))
    random.Random(3).shuffle(values)
    accepted: list[int] = []

    async def holder(value: int) -> None:
        async with aiosqlite.connect(path, timeout=30) as db:
            try:
                await guard.fence_in(db, RESOURCE, token=token(value, owner=f"h{value}"))
            except StaleTokenError:
                await db.rollback()
                return
            await db.execute(
                "UPDATE orders SET tokens = tokens || ',' || ? WHERE id = 1", (str(value),)
            )
            await db.commit()
            accepted.append(value)

    async with anyio.create_task_group() as tg:
        for value in values:
            tg.start_soon(holder, value)
    async with aiosqlite.connect(path) as db:
        rows = list(await db.execute_fetchall("SELECT tokens FROM orders WHERE id = 1"))
    applied = [int(text) for text in str(rows[0][0]).split(",") if text]
    assert applied == sorted(set(applied)) and applied[-1] == 20, applied
    assert sorted(applied) == sorted(accepted)


async def test_sqlalchemy_async_connection(path, guard) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.begin() as conn:
            await guard.fence_in(conn, RESOURCE, token=token(3))
            await conn.execute(text("UPDATE orders SET status = 'paid' WHERE id = 1"))
        with pytest.raises(StaleTokenError):
            async with engine.begin() as conn:
                await guard.fence_in(conn, RESOURCE, token=token(2, owner="old"))
                await conn.execute(text("UPDATE orders SET status = 'refunded' WHERE id = 1"))
    finally:
        await engine.dispose()
    assert (await status(path)) == "paid"


async def test_values_codec_table_and_repr(path) -> None:
    async with SqliteGuard(path, table="fences", codec=TEXT) as guard:
        await guard.write("r", "plain text", token=token(1))
        assert await guard.read_versioned("r") is not None
        assert repr(guard) == f"<SqliteGuard table='fences' on {str(path)!r}>"
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT value, version, token, owner, lock_name FROM fences").fetchone()
    db.close()
    assert row == (b"plain text", 1, 1, "a", "orders-lock")
