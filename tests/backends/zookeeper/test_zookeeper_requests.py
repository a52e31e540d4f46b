"""What a burst of new locks costs in requests: one multi per lock, nothing more."""

from __future__ import annotations

import uuid

import anyio
import pytest

import lockkit

pytestmark = pytest.mark.zookeeper


async def test_a_burst_of_new_locks_sends_one_create_each(zookeeper_server) -> None:
    """50 locks acquired at once under a root that does not exist yet: the root is made
    once (at open), each lock's directory comes with its node in one multi, and a node
    in a directory it just made needs no listing to know it holds."""
    root = f"/burst-{uuid.uuid4().hex[:8]}"
    async with lockkit.connect(zookeeper_server.url, root=root) as locks:
        held = [locks.lock(f"job:{i}", ttl=30) for i in range(50)]
        async with anyio.create_task_group() as tg:
            for lock in held:
                tg.start_soon(lock.acquire)
        requests = locks.statistics().backend.requests
        assert requests.get("create") == 51, requests  # the root, then one per lock
        assert requests.get("children", 0) == 0, requests
        for lock in held:
            await lock.release()
