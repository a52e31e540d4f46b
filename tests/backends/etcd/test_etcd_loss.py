"""Loss of a hold: a frozen holder, a key deleted behind the holder's back, a revoked
lease. Each is told (LockLostError) and the next holder gets a higher token."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid

import anyio
import pytest
from anyio.abc import Process

import lockkit
from lockkit import FencingToken, StaleTokenError
from lockkit.backends.etcd import EtcdBackend
from lockkit.guards.memory import MemoryGuard
from tests.servers import etcdctl

from .helpers import keys_under

pytestmark = pytest.mark.etcd


async def _line(process: Process, timeout: float) -> str:
    assert process.stdout is not None
    data = b""
    with anyio.fail_after(timeout):
        while not data.endswith(b"\n"):
            data += await process.stdout.receive(1)
    return data.decode().strip()


@pytest.mark.fault
async def test_a_frozen_holder_loses_its_lease_and_hears_of_it(etcd_server) -> None:
    """A holder process frozen (SIGSTOP) past its 2 s lease: the server deletes its key,
    the next waiter acquires with a higher token and writes through the guard; resumed,
    the old holder is told (LockLostError) within 3 s although its lock ttl (60 s) is far
    off, and its write with the old token is refused."""
    name = f"frozen-{uuid.uuid4().hex[:8]}"
    guard: MemoryGuard[str] = MemoryGuard()
    process = await anyio.open_process(
        [sys.executable, "-m", "tests.backends.etcd._holder", etcd_server.url, name, "2"]
    )
    try:
        word, value, owner = (await _line(process, 30)).split()
        assert word == "held"
        old = FencingToken(int(value), name=name, backend="etcd", owner=owner)
        await guard.write("res", "old", token=old)
        os.kill(process.pid, signal.SIGSTOP)
        async with lockkit.connect(etcd_server.url) as locks:
            async with locks.lock(name, ttl=10, timeout=15) as new:
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


async def test_a_key_deleted_behind_the_holders_back_is_a_loss(etcd_server) -> None:
    """Someone deletes the holder's key (``etcdctl del``): the holder's watch on its own
    key reports it, the body is cancelled within a second (far inside the 30 s ttl) and
    ``async with`` raises LockLostError; a waiter already queued takes over."""
    name = f"deleted-{uuid.uuid4().hex[:8]}"
    prefix = f"lockkit/{name}/"
    finished = False
    async with lockkit.connect(etcd_server.url) as a, lockkit.connect(etcd_server.url) as b:
        with pytest.raises(lockkit.LockLostError):
            async with a.lock(name, ttl=30) as old:
                (key,) = await keys_under(etcd_server.endpoints, prefix)
                await anyio.to_thread.run_sync(lambda: etcdctl(etcd_server.endpoints, "del", key))
                deleted = time.monotonic()
                await anyio.sleep(10)
                finished = True
        assert not finished and time.monotonic() - deleted < 1.0
        async with b.lock(name, ttl=10, timeout=5) as new:
            assert int(new) > int(old)


async def test_a_revoked_lease_is_a_loss_and_waiters_queue_again(etcd_server) -> None:
    """The client's lease is revoked behind its back: the hold is lost at once (its key's
    deletion is seen, the lease is found gone) and the loss says the lease is gone; a
    waiter of the same client queues again on a new lease and gets the lock; the old
    lease's keys are all gone."""
    name = f"revoked-{uuid.uuid4().hex[:8]}"
    async with lockkit.connect(etcd_server.url, lease_ttl=3) as a:
        backend = a.backend
        assert isinstance(backend, EtcdBackend)
        old_lease = backend.lease_id
        assert old_lease is not None
        got: list[FencingToken] = []

        async def wait() -> None:
            async with a.lock(name, ttl=10, timeout=20) as token:
                got.append(token)

        async with anyio.create_task_group() as tg:
            with pytest.raises(lockkit.LockLostError) as lost:
                async with a.lock(name, ttl=30) as old:
                    tg.start_soon(wait)
                    with anyio.fail_after(5):
                        while (await a.inspect(name)).waiters < 1:  # noqa: ASYNC110
                            await anyio.sleep(0.02)
                    await anyio.to_thread.run_sync(
                        lambda: etcdctl(etcd_server.endpoints, "lease", "revoke", f"{old_lease:x}")
                    )
                    await anyio.sleep(10)
        with anyio.fail_after(10):
            while not got:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        assert "lease" in lost.value.reason and "expired or revoked" in lost.value.reason
        assert int(got[0]) > int(old)
        assert backend.lease_id != old_lease
