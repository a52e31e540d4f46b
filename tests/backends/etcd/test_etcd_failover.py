"""Faults: the cluster leader killed under a holder; compaction during a long wait."""

from __future__ import annotations

import json
import uuid

import anyio
import pytest

import lockkit
from lockkit import FencingToken
from tests.servers import etcdctl

pytestmark = [pytest.mark.etcd, pytest.mark.fault]


@pytest.mark.cluster
async def test_killing_the_leader_never_makes_two_unreported_holders(etcd_cluster) -> None:
    """A holder on every member's address; the leader is killed. A contender asks again
    and again for 8 s. Whenever it holds, the first holder has been told it lost the
    lock; otherwise the first holder still holds it. Never both."""
    name = f"leader-{uuid.uuid4().hex[:8]}"
    leader = await anyio.to_thread.run_sync(etcd_cluster.leader)
    async with (
        lockkit.connect(etcd_cluster.url, lease_ttl=3, timeout=1) as a,
        lockkit.connect(etcd_cluster.url, lease_ttl=3, timeout=1) as b,
    ):
        lock = a.lock(name, ttl=5)
        await lock.acquire()
        await anyio.to_thread.run_sync(leader.kill)
        overlaps = 0
        got: FencingToken | None = None
        with anyio.move_on_after(8):
            while got is None:
                try:
                    got = await b.lock(name, ttl=5, timeout=0.5).acquire()
                except (lockkit.LockTimeout, lockkit.BackendUnavailable):
                    continue
                lease = lock.lease
                overlaps += lease is not None and lease.held
        assert overlaps == 0, "two holders, the first one untold"
        lease = lock.lease
        if got is None:  # the first holder kept it through the election
            assert lease is not None and lease.held
            info = await a.inspect(name)
            assert info.holder is not None and info.holder.owner == lock.token.owner  # type: ignore[union-attr]
        else:
            assert lease is None or not lease.held


async def test_compaction_during_a_long_wait_does_not_lose_the_watch(servers) -> None:
    """A waiter watches the holder's key; the history is compacted past the revision
    its watch started at and the member restarts, so the watch must be created again:
    the server refuses the old revision, and the waiter reads the queue again and
    watches from a current one. The release then reaches it at once (not after the
    5 s fallback re-check)."""
    server = await anyio.to_thread.run_sync(servers.etcd)
    name = f"compact-{uuid.uuid4().hex[:8]}"
    async with lockkit.connect(server.url) as a, lockkit.connect(server.url) as b:
        holder = a.lock(name, ttl=30)
        await holder.acquire()
        got: list[float] = []

        async def wait() -> None:
            await b.lock(name, ttl=30, timeout=60).acquire()
            got.append(anyio.current_time())

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            with anyio.fail_after(5):
                while (await a.inspect(name)).waiters < 1:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            for i in range(20):
                await anyio.to_thread.run_sync(etcdctl, server.endpoints, "put", f"noise/{i}", "x")
            status = json.loads(
                await anyio.to_thread.run_sync(
                    lambda: etcdctl(server.endpoints, "endpoint", "status", "--write-out=json")
                )
            )
            revision = status[0]["Status"]["header"]["revision"]
            await anyio.to_thread.run_sync(
                lambda: etcdctl(server.endpoints, "compact", str(revision))
            )
            await anyio.to_thread.run_sync(server.restart)
            await anyio.sleep(2)  # the streams come back, the watch is refused and redone
            released = anyio.current_time()
            await holder.release()
            with anyio.fail_after(10):
                while not got:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
        assert got[0] - released < 1.5, f"handed over after {got[0] - released:.2f}s"
