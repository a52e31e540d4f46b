"""PostgresGuard beyond the conformance suite: the caller's own statements under the
fence in the caller's transaction, concurrent transactions at READ COMMITTED and
SERIALIZABLE, the SQLAlchemy recipe, the table, and what is shown and closed."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import asyncpg
import pytest

from lockkit import FencingToken, LockUsageError, StaleTokenError
from lockkit.abc import Guard
from lockkit.guards.sql import PostgresGuard
from lockkit.testing._guards import check_concurrent_writers, check_update_loses_nothing

pytestmark = pytest.mark.postgres

LOCK = "orders-lock"


def token(value: int, owner: str = "a") -> FencingToken:
    return FencingToken(value, name=LOCK, backend="test", owner=owner)


def resource() -> str:
    return f"orders:{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def db(postgres_server) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(postgres_server.url, min_size=2, max_size=12)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def orders(db: asyncpg.Pool) -> AsyncIterator[str]:
    """A table of the application's: one order, its status and the tokens that
    changed it, in commit order."""
    name = f"orders_{uuid.uuid4().hex[:8]}"
    await db.execute(
        f"CREATE TABLE {name} (id int PRIMARY KEY, status text NOT NULL, "
        "tokens bigint[] NOT NULL DEFAULT '{}')"
    )
    await db.execute(f"INSERT INTO {name} (id, status) VALUES (1, 'new')")
    try:
        yield name
    finally:
        await db.execute(f"DROP TABLE {name}")


@pytest.fixture
async def guard(postgres_server) -> AsyncIterator[PostgresGuard[Any]]:
    async with PostgresGuard(postgres_server.url) as guard:
        await guard.create_table()
        yield guard


async def status(db: asyncpg.Pool, orders: str) -> str:
    return await db.fetchval(f"SELECT status FROM {orders} WHERE id = 1")  # type: ignore[no-any-return]


# -- the caller's own statement under the fence -----------------------------------------


async def test_own_statement_applied_with_a_good_token_and_not_with_a_stale_one(
    db, orders, guard
) -> None:
    res = resource()
    async with db.acquire() as conn:
        async with conn.transaction():
            await guard.fence_in(conn, res, token=token(5))
            await conn.execute(f"UPDATE {orders} SET status = 'shipped' WHERE id = 1")
    fence = await guard.fence(res)
    assert fence is not None and (fence.token, fence.owner) == (5, "a")
    assert await status(db, orders) == "shipped"
    assert await guard.read(res) is None, "fence_in stored a value"

    ran = False
    async with db.acquire() as conn:
        with pytest.raises(StaleTokenError) as caught:
            async with conn.transaction():
                await guard.fence_in(conn, res, token=token(4, owner="old"))
                ran = True
                await conn.execute(f"UPDATE {orders} SET status = 'cancelled' WHERE id = 1")
    assert not ran, "the caller's statement ran after a stale fence"
    assert (caught.value.resource, int(caught.value.offered), caught.value.current) == (res, 4, 5)
    assert await status(db, orders) == "shipped"
    fence = await guard.fence(res)
    assert fence is not None and fence.token == 5


async def test_rollback_leaves_the_fence_where_it_was(db, orders, guard) -> None:
    res = resource()
    await guard.check(res, token=token(5))
    async with db.acquire() as conn:
        with pytest.raises(RuntimeError, match="changed my mind"):
            async with conn.transaction():
                await guard.fence_in(conn, res, token=token(9, owner="b"))
                await conn.execute(f"UPDATE {orders} SET status = 'shipped' WHERE id = 1")
                raise RuntimeError("changed my mind")
    fence = await guard.fence(res)
    assert fence is not None and (fence.token, fence.owner) == (5, "a"), "a rollback kept the fence"
    assert await status(db, orders) == "new"
    await guard.write(res, "still open to token 6", token=token(6, owner="c"))


async def test_fence_in_needs_a_transaction(db, guard) -> None:
    async with db.acquire() as conn:
        with pytest.raises(LockUsageError, match="transaction"):
            await guard.fence_in(conn, resource(), token=token(1))
    with pytest.raises(TypeError, match="asyncpg connection"):
        await guard.fence_in(object(), resource(), token=token(1))


async def test_a_second_holder_waits_for_the_first_transaction(db, orders, guard) -> None:
    """The fence row stays locked until the first transaction ends: the second
    holder's fence_in returns only after the commit, and sees the new fence."""
    res = resource()
    second_done = anyio.Event()
    async with db.acquire() as first, db.acquire() as second:
        outcome: list[str] = []

        async def second_holder() -> None:
            try:
                async with second.transaction():
                    await guard.fence_in(second, res, token=token(7, owner="second"))
                    await second.execute(f"UPDATE {orders} SET status = 'second' WHERE id = 1")
                outcome.append("accepted")
            except StaleTokenError:
                outcome.append("refused")
            second_done.set()

        async with anyio.create_task_group() as tg:
            transaction = first.transaction()
            await transaction.start()
            await guard.fence_in(first, res, token=token(8, owner="first"))
            tg.start_soon(second_holder)
            await wait_for_lock_wait(db)
            assert not second_done.is_set(), "the second holder did not wait for the first"
            await first.execute(f"UPDATE {orders} SET status = 'first' WHERE id = 1")
            await transaction.commit()
    assert outcome == ["refused"]
    assert await status(db, orders) == "first"


async def wait_for_lock_wait(db: asyncpg.Pool) -> None:
    """Until some backend of this database waits for a row lock."""
    with anyio.fail_after(10):
        while not await db.fetchval(  # noqa: ASYNC110 - polling the server
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ):
            await anyio.sleep(0.01)


# -- isolation levels --------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["read_committed", "serializable"])
async def test_concurrent_transactions_apply_tokens_in_order(db, orders, guard, isolation) -> None:
    """40 holders with shuffled tokens, each in its own transaction on its own
    connection: fence_in, then the application's update. The updates that commit carry
    strictly rising tokens (a stale holder never changes the order after a newer one),
    the highest token is among them, and every other holder was refused. At
    SERIALIZABLE the holders retry the serialization failures they get, as the
    application's own retry loop would."""
    res = resource()
    values = list(range(1, 41))
    random.Random(7).shuffle(values)
    accepted: list[int] = []
    refused: list[int] = []
    failures = 0

    async def holder(value: int) -> None:
        nonlocal failures
        while True:
            async with db.acquire() as conn:
                try:
                    async with conn.transaction(isolation=isolation):
                        await guard.fence_in(conn, res, token=token(value, owner=f"h{value}"))
                        await conn.execute(
                            f"UPDATE {orders} SET tokens = tokens || $1::bigint WHERE id = 1",
                            value,
                        )
                except StaleTokenError:
                    refused.append(value)
                except asyncpg.SerializationError:
                    failures += 1
                    continue
                else:
                    accepted.append(value)
                return

    async with anyio.create_task_group() as tg:
        for value in values:
            tg.start_soon(holder, value)
    applied = list(await db.fetchval(f"SELECT tokens FROM {orders} WHERE id = 1"))
    assert applied == sorted(set(applied)), f"tokens applied out of order: {applied}"
    assert sorted(applied) == sorted(accepted)
    assert applied[-1] == 40
    assert sorted(accepted + refused) == sorted(values)
    fence = await guard.fence(res)
    assert fence is not None and fence.token == 40
    print(f"{isolation}: {len(accepted)} accepted, {len(refused)} refused, {failures} retried")


@pytest.mark.parametrize("isolation", ["read committed", "serializable"])
async def test_guard_writes_under_a_default_isolation_level(postgres_server, isolation) -> None:
    """The conformance checks with races, on connections whose every statement runs at
    ``isolation``: the guard's own statements retry serialization failures."""
    options: dict[str, Any] = {"server_settings": {"default_transaction_isolation": isolation}}

    def factory() -> Guard[Any]:
        return PostgresGuard(postgres_server.url, **options)

    await check_concurrent_writers(factory, f"{isolation}:")
    await check_update_loses_nothing(factory, f"{isolation}:")


async def test_serialization_failure_retried_in_write_surfaced_in_fence_in(
    postgres_server, db, guard
) -> None:
    """A write that waited for the fence row while another transaction changed it:
    at SERIALIZABLE the server refuses it after the commit. The guard's own write runs
    again (and is accepted); with no retries, or in the caller's transaction
    (fence_in), the driver's SerializationError reaches the caller."""
    serializable: dict[str, Any] = {
        "server_settings": {"default_transaction_isolation": "serializable"}
    }
    url = postgres_server.url

    async def race(write: Any) -> Any:
        res = resource()
        await guard.check(res, token=token(1))
        async with db.acquire() as other:
            transaction = other.transaction()
            await transaction.start()
            await guard.fence_in(other, res, token=token(2, owner="other"))
            result: list[Any] = []

            async def attempt() -> None:
                try:
                    await write(res)
                    result.append("accepted")
                except Exception as exc:
                    result.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(attempt)
                await wait_for_lock_wait(db)
                await transaction.commit()
        fence = await guard.fence(res)
        return result[0], fence

    async with PostgresGuard(url, **serializable) as retrying:
        outcome, fence = await race(lambda res: retrying.write(res, "x", token=token(3, "w")))
        assert outcome == "accepted" and fence is not None and fence.token == 3

    async with PostgresGuard(url, serialization_retries=0, **serializable) as strict:
        outcome, fence = await race(lambda res: strict.write(res, "x", token=token(3, "w")))
        assert isinstance(outcome, asyncpg.SerializationError), outcome
        assert fence is not None and fence.token == 2

    async def in_transaction(res: str) -> None:
        async with db.acquire() as conn, conn.transaction(isolation="serializable"):
            await conn.fetchval("SELECT 1")  # the snapshot is taken here
            await guard.fence_in(conn, res, token=token(3, owner="w"))

    outcome, fence = await race(in_transaction)
    assert isinstance(outcome, asyncpg.SerializationError), outcome
    assert fence is not None and fence.token == 2


# -- SQLAlchemy ------------------------------------------------------------------------


async def test_sqlalchemy_async_connection(postgres_server, db, orders, guard) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    res = resource()
    engine = create_async_engine(
        postgres_server.url.replace("postgresql://", "postgresql+asyncpg://")
    )
    try:
        async with engine.begin() as conn:
            await guard.fence_in(conn, res, token=token(3))
            await conn.execute(text(f"UPDATE {orders} SET status = 'paid' WHERE id = 1"))
        with pytest.raises(StaleTokenError):
            async with engine.begin() as conn:
                await guard.fence_in(conn, res, token=token(2, owner="old"))
                await conn.execute(text(f"UPDATE {orders} SET status = 'refunded' WHERE id = 1"))
        async with engine.connect() as conn:
            await guard.fence_in(conn, res, token=token(4, owner="b"))
            await conn.rollback()
    finally:
        await engine.dispose()
    assert await status(db, orders) == "paid"
    fence = await guard.fence(res)
    assert fence is not None and (fence.token, fence.owner) == (3, "a")


# -- the table, the connection, what is shown -------------------------------------------


async def test_own_table_made_explicitly_and_application_pool_left_open(db) -> None:
    schema = f"app_{uuid.uuid4().hex[:6]}"
    await db.execute(f"CREATE SCHEMA {schema}")
    try:
        guard: PostgresGuard[Any] = PostgresGuard(db, table=f"{schema}.fences", create_table=False)
        with pytest.raises(asyncpg.UndefinedTableError):
            await guard.write("r", 1, token=token(1))
        await guard.create_table()
        await guard.write("r", {"qty": 3}, token=token(1))
        assert await guard.read("r") == {"qty": 3}
        stored = await db.fetchrow(f"SELECT * FROM {schema}.fences")
        assert stored["version"] == 1 and stored["token"] == 1 and stored["lock_name"] == LOCK
        await guard.aclose()
        assert await db.fetchval("SELECT 1") == 1, "the guard closed the application's pool"
        with pytest.raises(LockUsageError):
            await guard.read("r")
    finally:
        await db.execute(f"DROP SCHEMA {schema} CASCADE")


async def test_application_connection(postgres_server) -> None:
    conn = await asyncpg.connect(postgres_server.url)
    try:
        async with PostgresGuard(conn) as guard:
            res = resource()
            async with anyio.create_task_group() as tg:  # one statement at a time on it
                for value in range(1, 11):
                    tg.start_soon(write_ignoring_stale, guard, res, value)
            assert await guard.read(res) == 10
        assert not conn.is_closed()
    finally:
        await conn.close()


async def write_ignoring_stale(guard: Guard[Any], res: str, value: int) -> None:
    try:
        await guard.write(res, value, token=token(value, owner=f"w{value}"))
    except StaleTokenError:
        pass


async def test_credentials_never_shown_and_unreachable_is_backend_unavailable() -> None:
    from lockkit import BackendUnavailable, ConfigurationError

    with anyio.fail_after(20):
        guard: PostgresGuard[Any] = PostgresGuard("postgresql://app:s3cret@127.0.0.1:1/db")
        assert "s3cret" not in repr(guard)
        with pytest.raises(BackendUnavailable) as caught:
            await guard.fence("r")
        assert "s3cret" not in str(caught.value)
        with pytest.raises(BackendUnavailable):
            async with guard:  # entering connects
                pass
    with pytest.raises(ConfigurationError, match="table"):
        PostgresGuard("postgresql://localhost/db", table="orders; DROP TABLE x")
    with pytest.raises(ConfigurationError, match="postgresql://"):
        PostgresGuard("redis://localhost")
