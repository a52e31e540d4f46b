"""Queue entries whose waits are over but whose leave never reached the server.

A failover can drop a leave the old primary acknowledged (replication is asynchronous),
and a leave given up after a long outage never arrives. Liveness in the queue is per
client, so such an entry looks alive while its client still waits on the lock with
other waiters. These tests put such an entry in place by hand, the way a lost leave
leaves it, and check that the waiters behind it are served.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode

import lockkit
from lockkit.backends.redis import RedisBackend

pytestmark = pytest.mark.redis

GONE = "0" * 32  # the owner id of a wait that ended; its leave was lost


def backend(client: lockkit.LockClient) -> RedisBackend:
    assert isinstance(client.backend, RedisBackend)
    return client.backend


async def queued(client: lockkit.LockClient, name: str, n: int) -> None:
    """Wait until ``n`` waiters are in line and the client hears its wake-ups."""
    with anyio.fail_after(10):
        while (  # noqa: ASYNC110
            (await client.inspect(name)).waiters < n
            or client.statistics().backend.subscriptions < 1
        ):
            await anyio.sleep(0.02)


def raw_client(server: object) -> aioredis.Redis | aioredis.RedisCluster:
    nodes = getattr(server, "startup_nodes", None)
    if nodes is not None:
        return aioredis.RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes])
    return aioredis.Redis.from_url(server.url)  # type: ignore[attr-defined]


async def put_lost_entry(
    raw: aioredis.Redis | aioredis.RedisCluster, client: lockkit.LockClient, name: str
) -> None:
    """Queue ``GONE`` of ``client`` ahead of everyone, as a lost leave leaves it."""
    keys = backend(client).keys(name)
    first = await raw.zrange(keys.queue, 0, 0, withscores=True)
    score = (float(first[0][1]) if first else time.time() * 1e6) - 1_000_000
    await raw.zadd(keys.queue, {f"{backend(client).client_id}:{GONE}": score})


@pytest.mark.parametrize(
    "fixture", ["redis_server", pytest.param("redis_cluster", marks=pytest.mark.cluster)]
)
async def test_a_lost_leave_at_the_head_of_a_free_lock_does_not_block(fixture, request) -> None:
    """The holder died (its key expires), and the head of the queue is an ended wait of
    a client that still waits there: the live waiter behind it must get the lock.
    Before, it waited until its own timeout (LockTimeout): the ended entry looked alive
    and nothing ever woke its client."""
    server = request.getfixturevalue(fixture)
    raw = raw_client(server)
    async with lockkit.connect(server.url) as a:
        name = "stray-free"
        keys = backend(a).keys(name)
        await raw.set(keys.owner, "a-holder-that-died", px=300)
        # ttl 2: a waiter not first in line re-checks every 1-1.5 s
        waiter = a.lock(name, ttl=2, timeout=8)

        async def put_it() -> None:
            await queued(a, name, 1)
            await put_lost_entry(raw, a, name)

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(put_it)
            await waiter.acquire()
        took = time.monotonic() - started
        assert took < 6, f"the waiter behind the ended entry waited {took:.1f}s"
        assert (await a.inspect(name)).waiters == 0  # the ended entry is gone too
        await waiter.release()
    await raw.aclose()


async def test_a_lock_handed_to_a_lost_leave_moves_on(redis_server) -> None:
    """A release hands the lock to the head, an ended wait of a live client: that
    client gives the lock up for it, so the next waiter gets it within about two
    seconds, not when its own fallback re-check fires (5-7.5 s at ttl 60)."""
    url = redis_server.url
    raw = aioredis.Redis.from_url(url)
    async with lockkit.connect(url) as a, lockkit.connect(url) as b:
        name = "stray-handed"
        holder = b.lock(name, ttl=60)
        await holder.acquire()
        waiter = a.lock(name, ttl=60, timeout=20)
        released = 0.0

        async def put_it_and_release() -> None:
            nonlocal released
            await queued(a, name, 1)
            await put_lost_entry(raw, a, name)
            await holder.release()
            released = time.monotonic()

        async with anyio.create_task_group() as tg:
            tg.start_soon(put_it_and_release)
            await waiter.acquire()
        took = time.monotonic() - released
        assert took < 4, f"the lock stayed with the ended wait for {took:.1f}s"
        await waiter.release()
    await raw.aclose()


async def test_a_live_waiter_is_never_swept(redis_server) -> None:
    """Wake-ups that reach no waiter make the client sweep its queues: its own live
    waiters stay in line and in order, whatever their age."""
    url = redis_server.url
    async with lockkit.connect(url) as a, lockkit.connect(url) as b:
        name = "stray-live"
        holder = b.lock(name, ttl=60)
        await holder.acquire()
        order: list[int] = []

        async def wait(i: int) -> None:
            lock = a.lock(name, ttl=60, timeout=20)
            async with lock:
                order.append(i)

        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(wait, i)
                await queued(a, name, i + 1)
            room = backend(a)._room
            for i in range(3):  # wake-ups for waits this client does not know
                room.wake(f"{'f' * 31}{i}")
            await anyio.sleep(0.8)  # the sweep runs, and pauses
            assert not backend(a)._sweeping and not backend(a)._strays
            assert (await a.inspect(name)).waiters == 5
            await anyio.sleep(1)  # now every entry is older than a second
            room.wake("f" * 32)
            await anyio.sleep(0.8)
            assert (await a.inspect(name)).waiters == 5
            await holder.release()
        assert order == [0, 1, 2, 3, 4]


async def test_a_wake_up_that_overtakes_the_first_reply_is_kept(redis_server) -> None:
    """The lock may be handed to a waiter before the reply to its first ask (which put
    it in line) arrives: that wake-up is not for an ended wait. It is kept for the
    waiter, nothing is swept, and the waiter gets the lock it was handed."""
    url = redis_server.url
    async with lockkit.connect(url) as a, lockkit.connect(url) as b:
        name = "stray-overtaken"
        async with b.lock("warm-up", ttl=60):  # a subscribes to its wake-ups (and stays)
            with pytest.raises(lockkit.LockTimeout):
                await a.lock("warm-up", timeout=0.3).acquire()
        holder = b.lock(name, ttl=60)
        await holder.acquire()
        executor = backend(a)._executor
        assert executor is not None
        real = executor.evalsha

        async def evalsha(script: Any, keys: Any, args: Any) -> Any:
            reply = await real(script, keys, args)
            if script.name == "acquire" and reply[0] == 0:
                await holder.release()  # hands the lock to this waiter...
                with anyio.fail_after(5):  # ...whose wake-up arrives first
                    while not backend(a)._room._early:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
            return reply

        executor.evalsha = evalsha  # type: ignore[method-assign]
        waiter = a.lock(name, ttl=60, timeout=10)
        started = time.monotonic()
        await waiter.acquire()
        executor.evalsha = real  # type: ignore[method-assign]
        assert time.monotonic() - started < 2  # woken, not by a fallback re-check
        assert backend(a).statistics().requests.get("sweep", 0) == 0
        await waiter.release()


async def test_a_refusal_reports_the_last_token_handed_out(redis_server) -> None:
    """A "not granted" answer carries the last token minted, which is what lets a waiter
    tell a late wake-up (for a grant that has been lost since) from a live one."""
    async with lockkit.connect(redis_server.url) as a, lockkit.connect(redis_server.url) as b:
        name = "stray-seen"
        token = await b.lock(name, ttl=60).acquire()
        be = backend(a)
        turn = await be._try(be.keys(name), "someone", 60_000, "null", False)
        assert turn.grant is None and turn.seen == int(token)
