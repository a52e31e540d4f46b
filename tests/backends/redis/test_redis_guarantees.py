"""The Redis lock's guarantees, each pinned down by a test that fails when it breaks:
tokens past a fence ahead of the clock, queue entries kept alive, deadlines counted
from the send, no barging into a free lock past a live waiter."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

import lockkit
from lockkit.abc import Renewal
from lockkit.backends.redis import QUEUE_LEASE, RedisBackend

pytestmark = pytest.mark.redis


def rb(client: lockkit.LockClient) -> RedisBackend:
    assert isinstance(client.backend, RedisBackend)
    return client.backend


def unique() -> str:
    return f"g{uuid.uuid4().hex[:8]}:"


async def queued(client: lockkit.LockClient, name: str, count: int) -> None:
    with anyio.fail_after(5):
        while (await client.inspect(name)).waiters < count:  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def test_tokens_pass_a_fence_ahead_of_the_clock(redis_server) -> None:
    """A last token above the server's TIME (minted by a server whose clock was ahead)
    is passed by one for each grant: never repeated."""
    url = redis_server.url
    admin = aioredis.Redis.from_url(url)
    try:
        async with lockkit.connect(url, prefix=unique()) as locks:
            seconds, micros = await admin.time()
            fence = seconds * 1_000_000 + micros + 10**12  # 11.6 days ahead
            await admin.set(rb(locks).keys("ahead").fence, fence)
            async with locks.lock("ahead") as first:
                pass
            async with locks.lock("ahead") as second:
                pass
        assert (int(first), int(second)) == (fence + 1, fence + 2)
    finally:
        await admin.aclose()


async def test_a_long_wait_keeps_its_place_in_line(redis_server) -> None:
    """A waiter queued longer than the queue lease stays live (its client refreshes
    it) and is served before a later waiter of another client."""
    url, prefix, name = redis_server.url, unique(), "long-wait"
    admin = aioredis.Redis.from_url(url)
    order: list[str] = []

    async def wait(client: lockkit.LockClient, tag: str) -> None:
        async with client.lock(name, ttl=5, timeout=30):
            order.append(tag)

    try:
        async with (
            lockkit.connect(url, prefix=prefix) as a,
            lockkit.connect(url, prefix=prefix) as b,
            lockkit.connect(url, prefix=prefix) as c,
        ):
            holder = a.lock(name, ttl=10)  # renewed all along
            await holder.acquire()
            liveness = rb(b).keys(name).liveness
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait, b, "first")
                await queued(a, name, 1)
                alive_until = int(await admin.hget(liveness, rb(b).client_id) or 0)
                await anyio.sleep(QUEUE_LEASE + 0.5)
                refreshed = int(await admin.hget(liveness, rb(b).client_id) or 0)
                assert refreshed >= alive_until + 2500, "the waiter's queue entry was not kept"
                tg.start_soon(wait, c, "second")
                await queued(a, name, 2)
                await holder.release()
        assert order == ["first", "second"]
    finally:
        await admin.aclose()


@pytest.mark.fault
async def test_a_slow_grant_counts_from_the_send(servers) -> None:
    """The lease of a grant whose reply came 0.3 s late counts from before the request
    was sent, so the holder's safe deadline is never later than the server's expiry."""
    server = servers.redis()
    async with lockkit.connect(server.url) as locks:
        lock = locks.lock("slow", ttl=5)
        server.pause()
        async with anyio.create_task_group() as tg:

            async def resume() -> None:
                await anyio.sleep(0.3)
                server.resume()

            tg.start_soon(resume)
            before = locks.clock.now()
            await lock.acquire()
            took = locks.clock.now() - before
        lease = lock.lease
        assert lease is not None and took >= 0.3
        counted_from = lease.safe_deadline - lease.ttl + lease.drift - before
        # the request left within microseconds of the call (well under the 0.3 s delay)
        assert counted_from < 0.1, (
            f"the lease counts from {counted_from:.3f}s after the acquire began "
            f"(it took {took:.3f}s)"
        )
        await lock.release()


async def test_a_free_lock_waits_for_its_live_queue(redis_server, monkeypatch) -> None:
    """The holder's lease runs out while a live waiter of another client is queued and
    has not yet claimed (its claims are held back): a newcomer's try must not take the
    free lock; the waiter gets it."""
    url, prefix, name = redis_server.url, unique(), "no-barging"
    async with (
        lockkit.connect(url, prefix=prefix) as a,
        lockkit.connect(url, prefix=prefix) as b,
        lockkit.connect(url, prefix=prefix) as c,
    ):
        first = await a.lock(name, ttl=0.5, renew=False).acquire()
        executor = rb(b)._executor
        assert executor is not None
        real, gate, held_back = executor.evalsha, anyio.Event(), anyio.Event()

        async def gated(script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
            if script.name == "acquire" and held_back.is_set():
                await gate.wait()
            return await real(script, keys, args)

        monkeypatch.setattr(executor, "evalsha", gated)
        got: list[lockkit.FencingToken] = []

        async def wait() -> None:
            got.append(await b.lock(name, ttl=5, timeout=10).acquire())

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await queued(a, name, 1)
            await anyio.sleep(0.05)  # its second ask (after subscribing) is done too
            held_back.set()
            with anyio.fail_after(5):
                while (await a.inspect(name)).holder is not None:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            with pytest.raises(lockkit.LockTimeout):
                await c.lock(name, ttl=5, timeout=0).acquire()
            gate.set()
        assert got and int(got[0]) > int(first)


async def test_only_the_owner_releases_or_extends(redis_server) -> None:
    """A release or extend naming another owner changes nothing and answers False."""
    async with lockkit.connect(redis_server.url, prefix=unique()) as locks:
        backend = rb(locks)
        token = await locks.lock("owned", ttl=5).acquire()
        assert await backend.release("owned", "someone-else") is False
        assert await backend.extend("owned", "someone-else", ttl=60) is False
        assert await backend.extend_many([Renewal("owned", "someone-else", 60)]) == [False]
        info = await locks.inspect("owned")
        assert info.holder is not None and info.holder.owner == token.owner
        assert info.holder.expires_in is not None and info.holder.expires_in <= 5
        assert await backend.release("owned", token.owner) is True
