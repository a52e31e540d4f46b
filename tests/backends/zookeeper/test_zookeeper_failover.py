"""The ensemble's leader dies while a lock is held: the holder keeps the lock or is told
it lost it before anyone else gets it; never two holders that both believe they hold."""

from __future__ import annotations

import time
import uuid

import anyio
import pytest

import lockkit
from lockkit import LockLostError

pytestmark = [pytest.mark.zookeeper, pytest.mark.cluster, pytest.mark.fault]


async def test_killing_the_leader_never_makes_two_believing_holders(zookeeper_ensemble) -> None:
    name = f"leader-{uuid.uuid4().hex[:8]}"
    url = zookeeper_ensemble.url
    lost_at: list[float] = []
    granted_at: list[float] = []
    ended_at: list[float] = []
    async with lockkit.connect(url, timeout=2) as a, lockkit.connect(url, timeout=2) as b:
        holder = a.lock(name, ttl=3)

        async def hold() -> None:
            try:
                async with holder:
                    held.set()
                    await anyio.sleep(12)
                ended_at.append(time.monotonic())
            except LockLostError:
                lost_at.append(time.monotonic())

        async def wait() -> None:
            async with b.lock(name, ttl=3, timeout=60) as token:
                granted_at.append(time.monotonic())
                # the old holder must already know it lost the lock (or have released)
                lease = holder.lease
                assert lease is None or not lease.held, "two holders believe they hold"
                assert int(token) > 0

        held = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold)
            await held.wait()
            tg.start_soon(wait)
            with anyio.fail_after(10):
                while (await a.inspect(name)).waiters < 1:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            leader = zookeeper_ensemble.leader()
            leader.kill()
            await anyio.to_thread.run_sync(
                lambda: zookeeper_ensemble.wait_for_leader(exclude=leader)
            )
        assert granted_at, "the waiter never got the lock"
        # either told of the loss, or kept it through the election to the end of its
        # body; in both cases before the next holder got it
        assert len(lost_at + ended_at) == 1
        assert (lost_at + ended_at)[0] <= granted_at[0]
