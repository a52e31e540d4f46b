"""The Redis backend's life: opening verifies the server, closing leaves no connection
behind however calls were cancelled, and a short outage is ridden out."""

from __future__ import annotations

import gc
import random
import time
import uuid
import warnings

import anyio
import pytest

import lockkit
from lockkit._drivers.redis.resp import ConnectOptions, NotSentError, RespConnection
from tests.servers._base import free_ports
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.redis


# -- entering verifies ---------------------------------------------------------------


async def test_entering_fails_when_nothing_listens() -> None:
    (port,) = free_ports(1)
    client = lockkit.connect(f"redis://127.0.0.1:{port}/0", connect_timeout=1)
    with pytest.raises(lockkit.BackendUnavailable, match="unavailable"):
        async with client:
            pytest.fail("entered a client whose server is not there")


async def test_entering_fails_when_the_password_is_refused(redis_server) -> None:
    host, port = redis_server.host, redis_server.port
    client = lockkit.connect(f"redis://:wrong-{port}@{host}:{port}/0")
    with pytest.raises(lockkit.ConfigurationError, match="credentials") as info:
        async with client:
            pytest.fail("entered a client whose credentials are refused")
    assert f"wrong-{port}" not in str(info.value)


async def test_ping_measures_a_round_trip(redis_server) -> None:
    async with lockkit.connect(redis_server.url) as locks:
        latency = await locks.ping()
        assert isinstance(latency, float) and 0 < latency < 5
        assert locks.statistics().backend.requests["ping"] == 2  # on entering, and now


# -- closing leaves nothing open -------------------------------------------------------


def _clients(server: RedisServer) -> int:
    return int(server.info("clients")["connected_clients"])


async def _settled_clients(server: RedisServer) -> int:
    """Connected clients once closed sockets are gone (up to 5 s); 1 is the probe."""
    with anyio.move_on_after(5):
        while _clients(server) > 1:  # noqa: ASYNC110 - polling the server
            await anyio.sleep(0.05)
    return _clients(server)


async def test_cancelled_calls_leave_no_connection_open(servers) -> None:
    """Tasks acquiring and releasing, cancelled at random points (mid-request, mid-wait,
    mid-release, while the pub/sub connection is being made), then the clients close:
    no transport stays open, none is left for the garbage collector to warn about."""
    server = servers.redis()
    rng = random.Random(7)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(12):
            async with lockkit.connect(server.url) as a, lockkit.connect(server.url) as b:

                async def worker(client: lockkit.LockClient) -> None:
                    lock = client.lock("stress", ttl=5, timeout=5)
                    for _ in range(30):
                        with anyio.move_on_after(rng.uniform(0, 0.004)):
                            try:
                                async with lock:
                                    await anyio.sleep(rng.uniform(0, 0.001))
                            except lockkit.LockError:
                                pass  # a dropped connection: unavailable, lost, not owned

                async def drop_connections() -> None:
                    while True:  # reconnects race with the cancellations too
                        await anyio.sleep(rng.uniform(0.005, 0.02))
                        await anyio.to_thread.run_sync(
                            server.call, "CLIENT", "KILL", "TYPE", "normal"
                        )

                async with anyio.create_task_group() as tg:
                    for i in range(40):
                        tg.start_soon(worker, (a, b)[i % 2])
                    tg.start_soon(drop_connections)
                    await anyio.sleep(rng.uniform(0.05, 0.15))
                    tg.cancel_scope.cancel()  # and close with calls in flight
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, leaks
    assert await _settled_clients(server) == 1, server.call("CLIENT", "LIST")


async def test_a_connection_whose_opener_was_cancelled_is_closed(servers) -> None:
    """The first request on a connection is cancelled while the socket is being opened;
    the socket still opens (in the background), and closing must close it."""
    server = servers.redis()

    async def address() -> tuple[str, int]:
        return server.host, server.port

    conn = RespConnection(address, ConnectOptions())
    with anyio.move_on_after(0):  # cancelled at its first wait: the connect goes on
        await conn.execute("PING")
    await anyio.sleep(0.2)
    assert _clients(server) == 2  # the probe, and the connection made in the background
    await conn.aclose()
    assert await _settled_clients(server) == 1


async def test_a_connect_in_progress_when_dropped_is_not_adopted(servers) -> None:
    """``drop()`` (the Sentinels named a new primary) while a connect to the old
    address is under way: that socket is closed, the request fails unsent, and the next
    request connects again."""
    server = servers.redis()
    asked = anyio.Event()
    go_on = anyio.Event()

    async def address() -> tuple[str, int]:
        asked.set()
        await go_on.wait()
        return server.host, server.port

    conn = RespConnection(address, ConnectOptions())
    try:
        async with anyio.create_task_group() as tg:
            outcome: list[BaseException] = []

            async def first() -> None:
                try:
                    await conn.execute("PING")
                except NotSentError as exc:
                    outcome.append(exc)

            tg.start_soon(first)
            await asked.wait()
            conn.drop("a new primary")
            go_on.set()
        assert len(outcome) == 1, "a request on a dropped connect was sent"
        assert await _settled_clients(server) == 1  # only the probe: the socket was closed
        assert await conn.execute("PING") == b"PONG"  # connects anew
    finally:
        await conn.aclose()


# -- outages ---------------------------------------------------------------------------


@pytest.mark.fault
async def test_a_new_acquire_rides_out_a_restart(servers) -> None:
    """An acquire that starts while Redis restarts waits for it (its timeout allows)
    instead of failing at once."""
    server = servers.redis()
    async with lockkit.connect(server.url, timeout=1) as locks:
        await server.astop()
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.astart)
            started = time.monotonic()
            with anyio.fail_after(10):
                token = await locks.lock("restart", ttl=5, timeout=5).acquire()
        assert int(token) > 0
        assert time.monotonic() - started < 5


async def test_closing_the_client_ends_its_waits(redis_server) -> None:
    url = redis_server.url
    name = "close-waits:" + uuid.uuid4().hex[:6]
    async with lockkit.connect(url) as holder:
        await holder.lock(name, ttl=10).acquire()
        errors: list[BaseException] = []
        async with anyio.create_task_group() as tg:
            async with lockkit.connect(url) as waiting:

                async def wait() -> None:
                    try:
                        await waiting.lock(name, ttl=10).acquire()
                    except lockkit.LockUsageError as exc:
                        errors.append(exc)

                tg.start_soon(wait)
                with anyio.fail_after(5):
                    while (await holder.inspect(name)).waiters < 1:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                closing = time.monotonic()
        ended = time.monotonic() - closing
        assert len(errors) == 1, "a wait outlived its client"
        assert ended < 1.0, f"the wait ended {ended:.2f}s after the client closed"
        info = await holder.inspect(name)  # it left the queue before the client closed
        assert info.waiters == 0, f"{info.waiters} queue entries left by a closed client"
