"""Sessions: loss reaches the holder (aiozk only logs it), a reconnect within the
session keeps the lock, a frozen holder's node expires and its late write is refused."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
import uuid

import aiozk
import anyio
import anyio.abc
import pytest

import lockkit
from lockkit import FencingToken, LeaseState, LockLostError, StaleTokenError
from lockkit.guards.memory import MemoryGuard

from .helpers import children, raw_client

pytestmark = pytest.mark.zookeeper


async def _line(process: anyio.abc.Process, timeout: float) -> str:
    assert process.stdout is not None
    data = b""
    with anyio.fail_after(timeout):
        while not data.endswith(b"\n"):
            data += await process.stdout.receive(1)
    return data.decode().strip()


@pytest.mark.fault
async def test_a_frozen_holder_loses_its_node_and_hears_of_it(zookeeper_server) -> None:
    """A holder process frozen (SIGSTOP) past its 2 s session: the server deletes its
    node, the next waiter acquires with a higher token and writes through the guard;
    resumed, the old holder is told (LockLostError) within 3 s although its ttl (60 s)
    is far off, and its write with the old token is refused."""
    name = f"frozen-{uuid.uuid4().hex[:8]}"
    guard: MemoryGuard[str] = MemoryGuard()
    process = await anyio.open_process(
        [sys.executable, "-m", "tests.backends.zookeeper._holder", zookeeper_server.url, name, "2"]
    )
    try:
        word, value, owner = (await _line(process, 30)).split()
        assert word == "held"
        old = FencingToken(int(value), name=name, backend="zookeeper", owner=owner)
        await guard.write("res", "old", token=old)
        os.kill(process.pid, signal.SIGSTOP)
        async with raw_client(zookeeper_server.hosts) as raw:
            with anyio.fail_after(15):
                while await children(raw, "/lockkit/" + name):  # noqa: ASYNC110
                    await anyio.sleep(0.1)
        async with lockkit.connect(zookeeper_server.url) as locks:
            async with locks.lock(name, ttl=10, timeout=5) as new:
                assert int(new) > int(old)
                await guard.write("res", "new", token=new)
                os.kill(process.pid, signal.SIGCONT)
                resumed = time.monotonic()
                told = await _line(process, 10)
                assert told.startswith("lost"), told
                assert time.monotonic() - resumed < 3.0
                with pytest.raises(StaleTokenError):
                    await guard.write("res", "late", token=old)
                assert await guard.read("res") == "new"
                info = await locks.inspect(name)
                assert info.holder is not None and info.holder.owner == new.owner
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
            await process.wait()
            await process.aclose()


def end_session(hosts: str, session_id: int, password: bytes) -> None:
    """End a session on the server from another connection: take it over, then close
    it. Run in a thread that the caller joins, so the holder's event loop is frozen
    meanwhile (as a paused process is) and cannot take its session back in between."""

    async def take_over_and_close() -> None:
        thief = aiozk.ZKClient(hosts, session_timeout=10)
        thief.session.session_id = session_id
        thief.session.password = password
        await thief.start()
        await thief.close()

    thread = threading.Thread(target=asyncio.run, args=(take_over_and_close(),))
    thread.start()
    thread.join()


async def test_an_expired_session_reaches_the_holder(zookeeper_server) -> None:
    """The holder's session is ended on the server behind its back (another connection
    takes it over and closes it). aiozk only logs this and opens a new session; the
    holder's body is cancelled and LockLostError raised within 3 s (its ttl is 60 s),
    and another client takes the lock with a higher token."""
    name = f"expired-{uuid.uuid4().hex[:8]}"
    async with (
        lockkit.connect(zookeeper_server.url) as a,
        lockkit.connect(zookeeper_server.url) as b,
    ):
        session = a.backend._link.session  # type: ignore[attr-defined]
        started = 0.0
        finished = False
        with pytest.raises(LockLostError) as caught:
            async with a.lock(name, ttl=60) as old:
                end_session(zookeeper_server.hosts, session.session_id, session.password)
                started = time.monotonic()  # the session has ended: its nodes are gone
                await anyio.sleep(30)
                finished = True
        assert not finished
        assert time.monotonic() - started < 3.0
        assert caught.value.token is not None and int(caught.value.token) == int(old)
        assert "session expired" in str(caught.value)
        async with b.lock(name, timeout=5) as new:
            assert int(new) > int(old)


@pytest.mark.fault
async def test_a_reconnect_within_the_session_keeps_the_lock(servers) -> None:
    """The server is killed and restarted while a lock is held (20 s session): the lease
    is at risk meanwhile, the body runs on, and after the reconnect the lease is held
    again by the same node (the same token)."""
    server = servers.zookeeper()
    async with lockkit.connect(server.url, session_timeout=20, timeout=2) as locks:
        lock = locks.lock("restart", ttl=30)
        async with lock as token:
            lease = lock.lease
            assert lease is not None

            def state() -> LeaseState:  # read afresh (no narrowing across awaits)
                assert lease is not None
                return lease.state

            server.kill()
            states = set()
            with anyio.fail_after(10):
                while state() is not LeaseState.AT_RISK:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            states.add(state())
            server.restart()
            with anyio.fail_after(15):
                while state() is not LeaseState.HELD:
                    states.add(state())
                    await anyio.sleep(0.05)
            assert LeaseState.LOST not in states
            info = await locks.inspect("restart")
            assert info.holder is not None and info.holder.owner == token.owner
            assert info.holder.token == int(token)
