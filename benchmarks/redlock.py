"""redlock:// on 3 and 5 masters against a raw fan-out floor and the Redlock libraries.

The suite starts 5 Redis masters of its own (``tests.servers.redis.RedisMasters``, the
binary ``make deps`` installs; or ``LOCKKIT_BENCH_REDLOCK_URL``, a ``redlock://`` URL
with at least 5 hosts) and measures, with the first 3 and then all 5 masters, every
contender of a scenario interleaved (:func:`benchmarks.harness.interleave`):

1. uncontended acquire + release cycles: the floor (the same two fan-out rounds lockkit
   needs, issued raw through one ``redis.asyncio`` client per master: ``SET NX PX`` on
   every master at once, then ``DEL`` on every master at once), lockkit, aioredlock,
   pottery's ``AIORedlock`` and its ``Redlock`` (threads), and mithril-locks' Redlock
   backend (sync, threads; its fencing tokens come from the first master);
2. 8 and 64 tasks (or threads) on one lock: acquisitions/s, handoff share and latency,
   the longest wait and the per-worker spread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import redis
import redis.asyncio as aioredis

import lockkit

from .harness import (
    Contender,
    Figures,
    Result,
    SyncLock,
    Turns,
    contention,
    cycles,
    interleave,
    optional,
    show,
    thread_cycles,
    threads_contended,
)

SUITE = "redlock"
#: Tasks (or threads) on one lock in the contended scenarios.
TASKS = (8, 64)
_versions: dict[str, str] = {}


def server_versions() -> dict[str, str]:
    return dict(_versions)


@contextlib.asynccontextmanager
async def _masters() -> AsyncIterator[list[str]]:
    """``host:port`` of 5 masters: ``LOCKKIT_BENCH_REDLOCK_URL``, or fresh ones."""
    given = os.environ.get("LOCKKIT_BENCH_REDLOCK_URL")
    if given:
        yield lockkit.parse_url(given).host_strings(6379)
        return
    from tests.servers.redis import RedisMasters

    workdir = Path(tempfile.mkdtemp(prefix="lockkit-bench-redlock-"))
    group = RedisMasters("bench-redlock", workdir, count=5)
    try:
        group.start()
        group.wait_healthy()
        print(f"redlock: started 5 masters ({group.url})")
        yield [node.hostport for node in group.nodes]
    finally:
        group.stop()
        shutil.rmtree(workdir, ignore_errors=True)


class _Suite:
    def __init__(self, hosts: Sequence[str], duration: float) -> None:
        self.hosts = list(hosts)
        self.duration = duration
        self.base = f"bench-{secrets.token_hex(3)}"
        self.results: list[Result] = []

    def add(self, name: str, figures: dict[str, float], checks: Sequence[str] = ()) -> None:
        notes = "; ".join(checks)
        self.results.append(Result(SUITE, name, figures, notes))
        print(f"  {name}: {show(figures)}" + (f"\n    {notes}" if notes else ""), flush=True)

    async def section(self, title: str, limit: float, body: Callable[[], Awaitable[None]]) -> None:
        print(f"redlock: {title}", flush=True)
        try:
            with anyio.fail_after(limit):
                await body()
        except Exception as exc:
            traceback.print_exc()
            text = f"{type(exc).__name__}: {exc}"
            self.results.append(Result(SUITE, title, {}, text, failed=True))
            print(f"  FAILED: {text}", flush=True)

    def url(self, count: int) -> str:
        return "redlock://" + ",".join(self.hosts[:count])

    # -- contenders ----------------------------------------------------------------------

    async def contenders(
        self, stack: contextlib.AsyncExitStack, count: int, name: str, tasks: int | None
    ) -> list[Contender]:
        """The floor (uncontended only), lockkit and the peers on the first ``count``
        masters; ``tasks`` None for the uncontended cycle, else that many tasks (or
        threads) on one lock."""
        hosts = self.hosts[:count]
        raw = []
        for hostport in hosts:
            client = aioredis.Redis.from_url(f"redis://{hostport}/0", max_connections=2048)
            stack.push_async_callback(client.aclose)
            raw.append(client)
        sync = []
        for hostport in hosts:
            conn = redis.Redis.from_url(f"redis://{hostport}/0", max_connections=2048)
            stack.callback(conn.close)
            sync.append(conn)
        out: list[Contender] = []

        def asyncio_lock(label: str, role: str, make: Callable[[], Any]) -> None:
            if tasks is None:
                lock = make()

                async def cycle() -> None:
                    async with lock:
                        pass

                out.append(Contender(label, role, cycles(cycle)))
            else:
                out.append(Contender(label, role, contention(tasks, lambda _i: make())))

        def thread_lock(label: str, make: Callable[[], SyncLock]) -> None:
            if tasks is None:
                out.append(Contender(label, "peer", thread_cycles(make)))
            else:
                n = tasks

                async def run(duration: float) -> Figures:
                    return await threads_contended(lambda _i: make(), n, duration)

                out.append(Contender(label, "peer", run))

        if tasks is None:
            floor_key = f"{name}:floor"

            async def floor() -> None:
                await asyncio.gather(*(c.set(floor_key, "x", nx=True, px=30000) for c in raw))
                await asyncio.gather(*(c.delete(floor_key) for c in raw))

            out.append(
                Contender(f"floor: {count}x SET NX PX, then {count}x DEL", "floor", cycles(floor))
            )
        clients = [await stack.enter_async_context(lockkit.connect(self.url(count))) for _ in "ab"]
        mine = [c.lock(f"{name}:lockkit", ttl=30, timeout=60) for c in clients]
        turn = iter(range(1_000_000))
        asyncio_lock("lockkit", "lockkit", lambda: mine[next(turn) % 2])

        aioredlock, why = optional("aioredlock")
        if aioredlock is None:
            out.append(Contender("aioredlock", "peer", None, why))
        else:
            manager = aioredlock.Aioredlock([f"redis://{h}" for h in hosts])
            stack.push_async_callback(manager.destroy)

            async def aio_acquire() -> Any:
                while True:  # gives up after its 3 retries; a waiter asks again
                    try:
                        return await manager.lock(f"{name}:arl", lock_timeout=30)
                    except aioredlock.LockError:
                        continue

            async def aio_release(held: Any) -> None:
                await manager.unlock(held)

            asyncio_lock("aioredlock", "peer", lambda: Turns(aio_acquire, aio_release))

        pottery, why = optional("pottery")
        if pottery is None:
            out.append(Contender("pottery AIORedlock", "peer", None, why))
            out.append(Contender("pottery Redlock (threads)", "peer", None, why))
        else:

            def pottery_async() -> Any:
                lock = pottery.AIORedlock(
                    key=f"{name}:apot", masters=set(raw), auto_release_time=30
                )

                async def acquire() -> None:
                    if not await lock.acquire(timeout=60):
                        raise TimeoutError("pottery AIORedlock did not acquire in 60 s")

                async def release(_: object) -> None:
                    await lock.release()

                return Turns(acquire, release)

            asyncio_lock("pottery AIORedlock", "peer", pottery_async)

            def pottery_sync() -> SyncLock:
                lock = pottery.Redlock(key=f"{name}:pot", masters=set(sync), auto_release_time=30)
                return (lambda: lock.acquire(timeout=1)), lock.release

            thread_lock("pottery Redlock (threads)", pottery_sync)

        mithril, why = optional("mithril")
        if mithril is None:
            out.append(Contender("mithril-locks Redlock (threads)", "peer", None, why))
        else:
            from mithril.backends import RedlockBackend as MithrilRedlock
            from mithril.backends import RedlockConfig

            from .redis import _quiet_mithril

            _quiet_mithril()
            backend = MithrilRedlock(
                RedlockConfig(
                    instances=sync,
                    fencing_provider=mithril.RedisFencingTokenProvider(sync[0]),
                )
            )
            stack.callback(backend.close)

            def mithril_sync() -> SyncLock:
                held: list[Any] = []

                def acquire() -> bool:
                    lock = mithril.Lock(f"{name}:mith", backend=backend, ttl=30, timeout=1)
                    try:
                        lock.acquire()
                    except mithril.LockTimeoutError:
                        return False
                    held.append(lock)
                    return True

                return acquire, lambda: held.pop().release()

            thread_lock("mithril-locks Redlock (threads)", mithril_sync)
        return out

    async def measure(self, count: int, tasks: int | None) -> None:
        scenario = f"{count} masters, " + ("uncontended" if tasks is None else f"contended {tasks}")
        name = f"{self.base}:{count}:{tasks or 0}"
        async with contextlib.AsyncExitStack() as stack:
            contenders = await self.contenders(stack, count, name, tasks)
            primary = "cycles_per_s" if tasks is None else "acquisitions_per_s"
            self.results += await interleave(SUITE, scenario, contenders, self.duration, primary)


async def run(duration: float) -> list[Result]:
    async with _masters() as hosts:
        if len(hosts) < 5:
            return [Result(SUITE, "masters", {}, "5 masters are needed", failed=True)]
        suite = _Suite(hosts, duration)
        _versions["redlock"] = "5 independent redis-server masters"
        for count in (3, 5):
            for tasks in (None, *TASKS):
                await suite.section(
                    f"{count} masters, {tasks or 'no'} tasks",
                    900,
                    lambda c=count, t=tasks: suite.measure(c, t),
                )
        return suite.results
