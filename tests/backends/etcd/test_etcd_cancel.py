"""Cancelled waiters leave no key and no lease behind."""

from __future__ import annotations

import uuid

import anyio
import pytest

import lockkit
from lockkit.backends.etcd import EtcdBackend

from .helpers import keys_under, leases

pytestmark = pytest.mark.etcd


async def test_a_thousand_cancelled_waiters_leave_no_key_and_no_lease(etcd_server) -> None:
    """1,000 waiters queued behind a holder (their keys created), then cancelled at once:
    every key is deleted and no lease is added (the client's one lease carries them all);
    after the release and the close, the prefix is empty and the lease revoked."""
    name = f"cancel-{uuid.uuid4().hex[:8]}"
    prefix = f"lockkit/{name}/"
    before = await leases(etcd_server.endpoints)
    async with lockkit.connect(etcd_server.url) as locks:
        backend = locks.backend
        assert isinstance(backend, EtcdBackend)
        holder = locks.lock(name, ttl=30)
        await holder.acquire()
        async with anyio.create_task_group() as tg:
            for _ in range(1000):
                tg.start_soon(locks.lock(name, ttl=30).acquire)
            with anyio.fail_after(30):
                while (await locks.inspect(name)).waiters < 1000:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            assert len(await keys_under(etcd_server.endpoints, prefix)) == 1001
            assert len(await leases(etcd_server.endpoints) - before) == 1, "a lease per waiter"
            tg.cancel_scope.cancel()
        assert await keys_under(etcd_server.endpoints, prefix) == [prefix + f"{backend.lease_id:x}"]
        assert backend.statistics().cleanups_pending == 0
        await holder.release()
        assert await keys_under(etcd_server.endpoints, prefix) == []
        assert (await locks.inspect(name)).idle
        assert await leases(etcd_server.endpoints) - before == {backend.lease_id}
    assert await leases(etcd_server.endpoints) - before == set(), "the lease outlived the client"


async def test_timed_out_and_tried_waiters_leave_no_key(etcd_server) -> None:
    """``timeout=0`` against a holder creates nothing; a timed-out waiter deletes its key."""
    name = f"timeout-{uuid.uuid4().hex[:8]}"
    prefix = f"lockkit/{name}/"
    async with lockkit.connect(etcd_server.url) as a, lockkit.connect(etcd_server.url) as b:
        async with a.lock(name, ttl=30):
            for timeout in (0, 0.2):
                with pytest.raises(lockkit.LockTimeout):
                    await b.lock(name, timeout=timeout).acquire()
                assert len(await keys_under(etcd_server.endpoints, prefix)) == 1
        assert await keys_under(etcd_server.endpoints, prefix) == []
