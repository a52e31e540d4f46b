"""Cancelled and timed-out waiters leave no node behind, even when a create's reply is lost."""

from __future__ import annotations

import uuid

import anyio
import pytest

import lockkit
from lockkit._core._hold import new_owner_id
from lockkit._drivers.zookeeper import node_prefix

from .helpers import children, raw_client

pytestmark = pytest.mark.zookeeper


async def test_a_thousand_cancelled_waiters_leave_no_node(zookeeper_server) -> None:
    """1,000 waiters queued behind a holder (their nodes created), then cancelled at
    once: every node is deleted; after the release the directory is empty."""
    name = f"cancel-{uuid.uuid4().hex[:8]}"
    async with lockkit.connect(zookeeper_server.url) as locks:
        backend = locks.backend
        holder = locks.lock(name, ttl=30)
        await holder.acquire()
        async with raw_client(zookeeper_server.hosts) as raw:
            path = "/lockkit/" + name
            async with anyio.create_task_group() as tg:
                for _ in range(1000):
                    tg.start_soon(locks.lock(name, ttl=30).acquire)
                with anyio.fail_after(30):
                    while len(await children(raw, path)) < 1001:  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
            assert len(await children(raw, path)) == 1, "cancelled waiters left nodes"
            await holder.release()
            assert await children(raw, path) == []
        stats = backend.statistics()
        assert stats.waiting == 0 and stats.cleanups_pending == 0


async def test_a_node_whose_create_reply_was_lost_is_found_by_its_uuid(zookeeper_server) -> None:
    """A node left by a create whose reply never came (made here by another client under
    the owner's uuid) is found and deleted by the owner's release, which answers False:
    that node never held the lock for this client."""
    name = f"lost-reply-{uuid.uuid4().hex[:8]}"
    owner = new_owner_id()
    async with lockkit.connect(zookeeper_server.url) as locks:
        async with locks.lock(name, ttl=30):  # makes the directory; a holder stays ahead
            async with raw_client(zookeeper_server.hosts) as raw:
                path = "/lockkit/" + name
                await raw.create(f"{path}/{node_prefix(owner)}", ephemeral=True, sequential=True)
                assert len(await children(raw, path)) == 2
                assert await locks.backend.release(name, owner) is False
                left = await children(raw, path)
                assert len(left) == 1 and not left[0].startswith(node_prefix(owner))


async def test_a_waiter_cancelled_while_its_create_is_unanswered_leaves_nothing(servers) -> None:
    """The server freezes (SIGSTOP) while a waiter's create is on the wire; the waiter
    is cancelled. Its cleanup cannot reach the server, so it is retried; once the server
    resumes and applies the create, the retry finds the node by uuid and deletes it."""
    server = servers.zookeeper()
    name = "frozen-create"
    async with lockkit.connect(server.url, timeout=0.5) as locks:
        holder = locks.lock(name, ttl=30)
        await holder.acquire()
        async with anyio.create_task_group() as tg:
            server.pause()
            tg.start_soon(locks.lock(name, ttl=30).acquire)
            await anyio.sleep(0.3)  # the create is written, its reply cannot come
            tg.cancel_scope.cancel()
        server.resume()
        async with raw_client(server.hosts) as raw:
            with anyio.fail_after(15):
                while len(await children(raw, "/lockkit/" + name)) != 1:  # noqa: ASYNC110
                    await anyio.sleep(0.1)
            await holder.release()
            assert await children(raw, "/lockkit/" + name) == []
        assert locks.backend.statistics().cleanups_pending == 0
