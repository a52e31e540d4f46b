"""Redlock with masters killed, paused and restarted (5 masters of the test's own)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import anyio
import pytest

import lockkit
from lockkit import BackendUnavailable, LockTimeout, StaleTokenError
from lockkit.backends.redlock import RedlockBackend
from lockkit.guards.redis import RedisGuard
from tests.servers import ServerPool
from tests.servers.redis import RedisMasters, RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.redlock, pytest.mark.fault, pytest.mark.cluster]


def _name() -> str:
    return f"rl-{uuid.uuid4().hex[:8]}"


def _state(node: RedisServer, name: str) -> list[str]:
    """What ``node`` holds for lock ``name`` besides its token register."""
    return [k for k in ("o", "q", "l") if node.call("EXISTS", f"lockkit:{{{name}}}:{k}") == 1]


async def test_two_masters_down_still_grant_with_rising_tokens(servers: ServerPool) -> None:
    masters = servers.redis_masters(5)
    name = _name()
    async with lockkit.connect(masters.url, timeout=1) as a, lockkit.connect(masters.url) as b:
        locks = [a.lock(name, ttl=5, timeout=5), b.lock(name, ttl=5, timeout=5)]
        tokens = []
        for i in range(10):
            if i == 5:
                masters.nodes[1].kill()
                masters.nodes[3].kill()
            tokens.append(int(await locks[i % 2].acquire()))
            await locks[i % 2].release()
        assert tokens == sorted(tokens) and len(set(tokens)) == 10, tokens


@pytest.mark.parametrize("fault", ["kill", "pause"])
async def test_three_masters_down_refuse_and_leave_nothing(servers: ServerPool, fault: str) -> None:
    """Without a majority an acquire fails within its timeout; the two masters that
    granted give the lock back at once, and those that come back hold nothing."""
    masters = servers.redis_masters(5)
    name = _name()
    down, up = masters.nodes[:3], masters.nodes[3:]
    async with lockkit.connect(masters.url, timeout=1) as locks:
        for node in down:
            node.kill() if fault == "kill" else node.pause()
        started = time.monotonic()
        with pytest.raises((BackendUnavailable, LockTimeout)):
            await locks.lock(name, ttl=10, timeout=1).acquire()
        assert time.monotonic() - started < 2.5
        for node in up:
            assert _state(node, name) == [], "a master kept a grant without a majority"
        for node in down:
            node.restart() if fault == "kill" else node.resume()
        with anyio.fail_after(15):  # late requests to paused masters are undone in order
            while any(_state(node, name) for node in masters.nodes):  # noqa: ASYNC110
                await anyio.sleep(0.05)
        async with locks.lock(name, ttl=5, timeout=5) as token:
            assert int(token) > 0


async def _persist(node: RedisServer) -> None:
    """Keep ``node``'s data across a kill (AOF, fsync on every write), as the restart
    rule asks of a master that comes straight back."""
    node.appendonly = True
    node.config.append("appendfsync always")
    node.call("CONFIG", "SET", "appendfsync", "always")
    node.call("CONFIG", "SET", "appendonly", "yes")
    with anyio.fail_after(20):
        while True:
            info = node.info("persistence")
            flags = ("aof_enabled", "aof_rewrite_in_progress", "aof_rewrite_scheduled")
            if [info.get(f) for f in flags] == ["1", "0", "0"]:
                break
            await anyio.sleep(0.05)


async def test_tokens_rise_across_holders_with_different_majorities(servers: ServerPool) -> None:
    """1,000 acquisitions by two clients while a different pair of masters is out every
    100: frozen for the first 500, killed for the last 500 (they come back with their
    data, but without the grants they missed). Each majority differs from the last and
    the clients propose 0, so only the quorum max-register orders the tokens."""
    masters = servers.redis_masters(5)
    for node in masters.nodes:
        await _persist(node)
    name = _name()
    pairs = [(0, 1), (2, 3), (4, 0), (1, 2), (3, 4)]
    async with (
        lockkit.connect(masters.url, timeout=2) as a,
        lockkit.connect(masters.url, timeout=2) as b,
    ):
        for client in (a, b):
            backend = client.backend
            assert isinstance(backend, RedlockBackend)
            backend.propose = lambda: 0  # type: ignore[method-assign]
        locks = [a.lock(name, ttl=10, timeout=10), b.lock(name, ttl=10, timeout=10)]
        out: list[RedisServer] = []
        last = 0
        try:
            for i in range(1000):
                if i % 100 == 0:
                    for node in out:
                        node.resume() if i <= 500 else await node.arestart()
                    out = [masters.nodes[j] for j in pairs[(i // 100) % len(pairs)]]
                    for node in out:
                        node.pause() if i < 500 else node.kill()
                token = int(await locks[i % 2].acquire())
                assert token > last, f"acquisition {i}: token {token} after {last}"
                last = token
                await locks[i % 2].release()
        finally:
            for node in out:
                node.resume() if node.is_running else await node.arestart()


async def test_a_stale_holder_is_refused_by_the_redis_guard(
    redis_masters: RedisMasters, servers: ServerPool
) -> None:
    """A holder that stops (no renewal, no release) past its validity: the next holder
    gets a higher token and the Redis guard refuses the stale holder's late write."""
    name, resource = _name(), _name()
    store = servers.redis()
    async with (
        lockkit.connect(redis_masters.url) as a,
        lockkit.connect(redis_masters.url) as b,
        RedisGuard.from_url(store.url) as guard,
    ):
        old = await a.lock(name, ttl=0.5, renew=False).acquire()
        await guard.write(resource, "first", token=old)
        lock = b.lock(name, ttl=5, timeout=5)
        new = await lock.acquire()  # waits out the old lease
        assert int(new) > int(old)
        await guard.write(resource, "second", token=new)
        with pytest.raises(StaleTokenError):
            await guard.write(resource, "late", token=old)
        assert await guard.read(resource) == "second"
        await lock.release()


FROZEN_HOLDER = """
import sys, anyio, lockkit
from lockkit.guards.redis import RedisGuard

async def main(url, store, name, resource):
    async with lockkit.connect(url) as locks, RedisGuard.from_url(store) as guard:
        try:
            async with locks.lock(name, ttl=1.0, on_lost="raise") as token:
                await guard.write(resource, "first", token=token)
                print("HELD", int(token), flush=True)
                await anyio.sleep(1.5)  # frozen in here, past the lease
                try:
                    await guard.write(resource, "late", token=token)
                    print("WRITTEN", flush=True)
                except lockkit.StaleTokenError:
                    print("REFUSED", flush=True)
        except lockkit.LockLostError as exc:
            print("LOST", exc.reason, flush=True)

anyio.run(main, *sys.argv[1:])
"""


async def test_a_frozen_holder_process_is_refused_by_the_redis_guard(
    redis_masters: RedisMasters, servers: ServerPool
) -> None:
    """A holder process frozen (SIGSTOP) past its lease: the next holder gets a higher
    token and writes; the resumed holder's own late write is refused in Redis."""
    name, resource = _name(), _name()
    store = servers.redis()
    child = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
        [sys.executable, "-c", FROZEN_HOLDER, redis_masters.url, store.url, name, resource],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        kind, value = (await anyio.to_thread.run_sync(child.stdout.readline)).split()
        assert kind == "HELD"
        os.kill(child.pid, signal.SIGSTOP)
        async with (
            lockkit.connect(redis_masters.url) as locks,
            RedisGuard.from_url(store.url) as guard,
        ):
            async with locks.lock(name, ttl=10, timeout=10) as new:
                assert int(new) > int(value)
                await guard.write(resource, "second", token=new)
                os.kill(child.pid, signal.SIGCONT)
                out = (await anyio.to_thread.run_sync(child.communicate, None, 20))[0]
            assert await guard.read(resource) == "second"
        # on_lost="raise" lets the body go on to its late write: Redis refuses it, and
        # the end of the block reports the loss
        assert out.splitlines()[0] == "REFUSED", out
        assert out.splitlines()[1].startswith("LOST"), out
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
        child.wait()
