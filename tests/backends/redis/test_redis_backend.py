"""What the Redis backend alone does: key layout, processes, credentials, failover."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import anyio
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

import lockkit
from lockkit import FencingToken, LockTimeout, StaleTokenError
from lockkit.backends.redis import RedisBackend
from lockkit.guards.memory import MemoryGuard

pytestmark = pytest.mark.redis


def rb(client: lockkit.LockClient) -> RedisBackend:
    assert isinstance(client.backend, RedisBackend)
    return client.backend


def requests(client: lockkit.LockClient) -> int:
    """Requests the client's backend sent so far: scripts, commands, subscriptions."""
    stats = client.statistics().backend
    return stats.total_requests + stats.subscriptions


async def hold_through_failover(lock: lockkit.Lock) -> str:
    """After a failover: "kept" once the new primary confirmed a renewal of the lock,
    "lost" if the holder was told (or the server said) it no longer holds it."""
    with anyio.fail_after(30):
        while True:
            lease = lock.lease
            if lease is None or lease.lost:
                return "lost"
            try:
                await lock.extend()
            except lockkit.BackendUnavailable:
                await anyio.sleep(0.2)
                continue
            except lockkit.LockNotOwnedError:
                return "lost"
            return "kept"


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}:"


async def scan(url: str, pattern: str) -> set[str]:
    client = aioredis.Redis.from_url(url)
    try:
        return {k.decode() async for k in client.scan_iter(match=pattern, count=1000)}
    finally:
        await client.aclose()


def test_names_map_to_distinct_keys_in_one_slot() -> None:
    backend = lockkit.connect("redis://localhost").backend
    assert isinstance(backend, RedisBackend)
    names = ["a", "a:o", "a}", "{a}", "a%7D", "a/b", "%", "x" * 300]
    bases = {backend.keys(n).base for n in names}
    assert len(bases) == len(names)
    for name in names:
        k = backend.keys(name)
        keys = [k.owner, k.fence, k.queue, k.liveness, k.channel("client").decode()]
        assert len({key_slot(key.encode()) for key in keys}) == 1, keys


def test_bad_urls_and_options() -> None:
    with pytest.raises(lockkit.ConfigurationError, match="names one server"):
        lockkit.connect("redis://a,b")
    with pytest.raises(lockkit.ConfigurationError, match="service name"):
        lockkit.connect("redis+sentinel://a:26379")
    with pytest.raises(lockkit.ConfigurationError, match="unknown option 'colour'"):
        lockkit.connect("redis://localhost", colour="red")
    with pytest.raises(lockkit.ConfigurationError, match="fair"):
        lockkit.connect("redis://localhost?fair=maybe")
    with pytest.raises(lockkit.ConfigurationError, match="database"):
        lockkit.connect("redis://localhost/zero")
    with pytest.raises(lockkit.ConfigurationError, match="prefix"):
        lockkit.connect("redis://localhost", prefix="a{b}")
    with pytest.raises(lockkit.ConfigurationError, match="from_client"):
        RedisBackend.from_client(object())  # type: ignore[arg-type]


async def test_credentials_never_shown(redis_server) -> None:
    admin = aioredis.Redis.from_url(redis_server.url)
    user = f"lk{uuid.uuid4().hex[:6]}"
    secret = "pw-" + uuid.uuid4().hex
    await admin.execute_command("ACL", "SETUSER", user, "on", f">{secret}", "~*", "&*", "+@all")
    try:
        host, port = redis_server.host, redis_server.port
        good = f"redis://{user}:{secret}@{host}:{port}/0"
        client = lockkit.connect(good)
        assert secret not in repr(client) and secret not in repr(client.backend)
        async with client as locks:
            async with locks.lock("cred-check") as token:
                assert int(token) > 0
        bad = lockkit.connect(f"redis://{user}:wrong-{secret}@{host}:{port}/0")
        with pytest.raises(lockkit.ConfigurationError) as info:
            async with bad as locks:
                await locks.lock("cred-check").acquire()
        text = "".join(str(e) for e in (info.value, info.value.__cause__))
        assert secret not in text and "credentials" in str(info.value)
    finally:
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()


async def test_from_client_reuses_and_never_closes_the_app_client(redis_server) -> None:
    app = aioredis.Redis.from_url(redis_server.url)
    try:
        async with lockkit.LockClient(RedisBackend.from_client(app, prefix=unique())) as locks:
            holder = locks.lock("shared", ttl=5)
            first = await holder.acquire()
            waiter = locks.lock("shared", ttl=5, timeout=5)
            async with anyio.create_task_group() as tg:

                async def take() -> None:
                    token = await waiter.acquire()
                    assert int(token) > int(first)
                    await waiter.release()

                tg.start_soon(take)
                await anyio.sleep(0.2)
                await holder.release()
        assert await app.ping()  # still open
    finally:
        await app.aclose()


async def test_unfair_mode_lets_a_free_lock_go_to_whoever_asks(redis_server) -> None:
    url = redis_server.url
    async with lockkit.connect(url, fair=False) as a, lockkit.connect(url, fair=False) as b:
        holder = a.lock("unfair", ttl=5)
        await holder.acquire()
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.lock("unfair", ttl=5, timeout=5).acquire)
            await anyio.sleep(0.2)
            await holder.release()
            barger = a.lock("unfair", ttl=5, timeout=0)
            assert int(await barger.acquire()) > 0  # allowed here
            await barger.release()
        assert b.held_count == 1


@pytest.mark.parametrize(
    "fixture", ["redis_server", pytest.param("redis_cluster", marks=pytest.mark.cluster)]
)
async def test_one_command_per_handoff(fixture, request) -> None:
    """A release grants the next waiter outright and its wake-up carries the token: the
    waiter takes the lock without a request of its own."""
    url = request.getfixturevalue(fixture).url
    async with lockkit.connect(url) as a, lockkit.connect(url) as b:
        name = "handoff-count"
        first = a.lock(name, ttl=10)
        await first.acquire()
        done = anyio.Event()

        async def waiter(i: int) -> None:
            lock = b.lock(name, ttl=10)
            await lock.acquire()
            await lock.release()
            if i == 19:
                done.set()

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(waiter, i)
                await anyio.sleep(0.01)
            await anyio.sleep(0.2)
            before = requests(a) + requests(b)
            await first.release()
            await done.wait()
        after = requests(a) + requests(b)
        # 20 handoffs: each is one release (before grants went out outright, a release
        # plus a claim: 42 requests)
        assert after - before <= 20 + 2, (a.statistics(), b.statistics())


async def test_cancelled_waiters_leave_no_key(redis_server) -> None:
    url, prefix = redis_server.url, unique()
    async with lockkit.connect(url, prefix=prefix) as a, lockkit.connect(url, prefix=prefix) as b:
        holder = a.lock("crowd", ttl=30)
        await holder.acquire()
        held_keys = await scan(url, prefix + "*")
        async with anyio.create_task_group() as tg:
            for _ in range(1000):
                tg.start_soon(b.lock("crowd", ttl=30).acquire)
            with anyio.fail_after(30):
                while (await a.inspect("crowd")).waiters < 1000:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        assert (await a.inspect("crowd")).waiters == 0
        assert await scan(url, prefix + "*") == held_keys
        await holder.release()
        left = await scan(url, prefix + "*")
        # only the last-token key stays (kept on purpose, with an expiry)
        assert left == {rb(b).keys("crowd").fence}, left
        probe = aioredis.Redis.from_url(url)
        try:
            assert await probe.pttl(next(iter(left))) > 0
        finally:
            await probe.aclose()


async def test_tokens_survive_a_restart_without_persistence(servers) -> None:
    server = servers.redis()
    async with lockkit.connect(server.url) as locks:
        async with locks.lock("reborn") as before:
            pass
    server.restart()  # no persistence: every key is gone
    assert not await scan(server.url, "*")
    async with lockkit.connect(server.url) as locks:
        async with locks.lock("reborn") as after:
            assert int(after) > int(before)


async def test_a_missing_script_is_loaded_once_for_all_who_need_it(servers) -> None:
    """After a restart (or a failover) the server knows no script: the 50 acquires in
    flight all get NOSCRIPT, and one SCRIPT LOAD serves them all."""
    server = servers.redis()

    def loads() -> int:
        stats = server.info("commandstats").get("cmdstat_script|load", "calls=0")
        return int(stats.split(",")[0].removeprefix("calls="))

    async with lockkit.connect(server.url) as locks:
        async with locks.lock("warm"):
            pass
        server.call("SCRIPT", "FLUSH")
        before = loads()

        async def take(i: int) -> None:
            async with locks.lock(f"cold:{i}"):
                pass

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(take, i)
        assert loads() - before == 2  # acquire, then release (one load each)


HOLDER = """
import sys, anyio, lockkit

async def main(url, name):
    async with lockkit.connect(url) as locks:
        try:
            async with locks.lock(name, ttl=1.0, on_lost="raise") as token:
                print("TOKEN", int(token), token.owner, flush=True)
                await anyio.sleep(1.5)  # paused in here
                print("WRITE", int(token), token.owner, flush=True)
        except lockkit.LockLostError as exc:
            print("LOST", exc.reason, flush=True)

anyio.run(main, sys.argv[1], sys.argv[2])
"""


@pytest.mark.fault
async def test_paused_holder_in_another_process_is_fenced(redis_server) -> None:
    name = "paused:" + uuid.uuid4().hex[:6]
    guard: MemoryGuard[str] = MemoryGuard()
    child = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
        [sys.executable, "-c", HOLDER, redis_server.url, name],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        kind, value, owner = (await anyio.to_thread.run_sync(child.stdout.readline)).split()
        assert kind == "TOKEN"
        old = FencingToken(int(value), name=name, backend="redis", owner=owner)
        await guard.write("stock", "written by the first holder", token=old)
        os.kill(child.pid, signal.SIGSTOP)
        started = time.monotonic()
        async with lockkit.connect(redis_server.url) as locks:
            async with locks.lock(name, ttl=10, timeout=10) as new:
                waited = time.monotonic() - started
                assert int(new) > int(old)
                assert waited < 3, f"waited {waited:.2f}s for a 1s lease"
                await guard.write("stock", "written by the second holder", token=new)
                os.kill(child.pid, signal.SIGCONT)
                lines = (await anyio.to_thread.run_sync(child.communicate, None, 20))[0]
        assert "LOST" in lines, lines
        write = next(line for line in lines.splitlines() if line.startswith("WRITE"))
        _, value, owner = write.split()
        late = FencingToken(int(value), name=name, backend="redis", owner=owner)
        with pytest.raises(StaleTokenError):
            await guard.write("stock", "late write from the paused holder", token=late)
        assert await guard.read("stock") == "written by the second holder"
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
        child.wait()


@pytest.mark.cluster
@pytest.mark.fault
async def test_sentinel_failover_while_held(redis_sentinel) -> None:
    """Kill the primary while a lock is held, after its key reached the replica: the
    client follows the new primary, the holder keeps the lock (a renewal is confirmed
    there), and the next token is higher. The ttl outlasts the failover, so a replicated
    hold has no reason to be lost."""
    url = redis_sentinel.url
    name = "failover:" + uuid.uuid4().hex[:6]
    redis_sentinel.wait_replicated()
    async with lockkit.connect(url, timeout=2) as locks:
        lock = locks.lock(name, ttl=30)
        first = await lock.acquire()
        redis_sentinel.wait_replicated()
        old = redis_sentinel.primary()
        old.kill()
        await anyio.to_thread.run_sync(redis_sentinel.wait_for_failover, old)
        assert await hold_through_failover(lock) == "kept"
        await lock.release()
        async with locks.lock(name, ttl=5, timeout=10) as second:
            assert int(second) > int(first)


async def test_try_once_does_not_queue(redis_server) -> None:
    async with lockkit.connect(redis_server.url) as a, lockkit.connect(redis_server.url) as b:
        async with a.lock("once", ttl=5):
            for _ in range(5):
                with pytest.raises(LockTimeout):
                    await b.lock("once", timeout=0).acquire()
            assert (await a.inspect("once")).waiters == 0


@pytest.mark.fault
async def test_cleanup_that_failed_is_retried(servers) -> None:
    """A waiter cancelled while Redis is unreachable is removed from the queue once
    Redis answers again."""
    server = servers.redis()
    url = server.url
    async with lockkit.connect(url, timeout=0.5) as a, lockkit.connect(url, timeout=0.5) as b:
        holder = a.lock("orphan", ttl=30)
        await holder.acquire()
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.lock("orphan", ttl=30).acquire)
            with anyio.fail_after(5):
                while (await a.inspect("orphan")).waiters < 1:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            server.pause()
            tg.cancel_scope.cancel()  # its cleanup times out against the paused server
        assert b.statistics().backend.cleanups_pending == 1
        server.resume()
        with anyio.fail_after(10):
            while (await a.inspect("orphan")).waiters:  # noqa: ASYNC110
                await anyio.sleep(0.1)
        await holder.release()
        assert (await a.inspect("orphan")).idle


@pytest.mark.cluster
@pytest.mark.fault
async def test_cluster_master_failover_while_held(redis_cluster) -> None:
    """Kill the master serving a held lock's slot, after the lock's key reached its
    replica: the client follows the promoted replica, the holder keeps the lock, the
    waiter (listening on the node that died) gets it next, and tokens keep rising."""
    name = "cluster-failover:" + uuid.uuid4().hex[:6]
    url = redis_cluster.url
    async with lockkit.connect(url, timeout=2) as locks, lockkit.connect(url, timeout=2) as other:
        owner_key = rb(locks).keys(name).owner
        lock = locks.lock(name, ttl=30)
        first = await lock.acquire()
        got: list[int] = []
        async with anyio.create_task_group() as tg:

            async def waiter() -> None:  # listens on the node that is about to die
                async with other.lock(name, ttl=5, timeout=30) as token:
                    got.append(int(token))

            tg.start_soon(waiter)
            with anyio.fail_after(5):
                while (await locks.inspect(name)).waiters < 1:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            await anyio.to_thread.run_sync(redis_cluster.wait_replicated, owner_key)
            old = redis_cluster.master_for(owner_key)
            old.kill()
            await anyio.to_thread.run_sync(redis_cluster.wait_for_failover, old)
            assert await hold_through_failover(lock) == "kept"
            await lock.release()
        assert got and got[0] > int(first)  # the waiter followed the slot to its new master
        async with locks.lock(name, ttl=5, timeout=10) as second:
            assert int(second) > got[0]


async def test_prefix_with_percent_signs(redis_server) -> None:
    url = redis_server.url
    prefix = unique("p%s%d%%")
    async with lockkit.connect(url, prefix=prefix) as a, lockkit.connect(url, prefix=prefix) as b:
        holder = a.lock("pct", ttl=5)
        await holder.acquire()
        async with anyio.create_task_group() as tg:
            got: list[int] = []

            async def wait() -> None:
                got.append(int(await b.lock("pct", ttl=5, timeout=5).acquire()))

            tg.start_soon(wait)
            await anyio.sleep(0.2)
            started = time.monotonic()
            await holder.release()
        assert got and time.monotonic() - started < 0.5  # woken by message, not a fallback


def test_wait_replicas_needs_own_connection() -> None:
    with pytest.raises(lockkit.ConfigurationError, match="wait_replicas"):
        RedisBackend.from_client(aioredis.Redis(), wait_replicas=1)
    with pytest.raises(lockkit.ConfigurationError, match="wait_replicas"):
        lockkit.connect("redis://localhost", wait_replicas=-1)


@pytest.mark.cluster
async def test_wait_replicas(redis_sentinel) -> None:
    url = redis_sentinel.url
    name = "replicated:" + uuid.uuid4().hex[:6]
    async with lockkit.connect(url, wait_replicas=1) as locks:
        async with locks.lock(name, ttl=5) as token:
            assert int(token) > 0
    async with lockkit.connect(url, wait_replicas=3, wait_timeout=0.2) as locks:
        with pytest.raises(lockkit.BackendUnavailable, match="only 1 of 3 replicas"):
            await locks.lock(name, ttl=5).acquire()
        assert (await locks.inspect(name)).idle  # the grant was taken back
