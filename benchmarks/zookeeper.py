"""zookeeper:// against the protocol floor and the other ZooKeeper lock recipes.

The suite starts its own ZooKeeper (``tests.servers.zookeeper.ZooKeeperServer``, the
jars ``make deps`` caches; or ``LOCKKIT_BENCH_ZOOKEEPER_URL``) and measures, every
contender of a scenario interleaved (:func:`benchmarks.harness.interleave`):

1. uncontended acquire + release cycles: the floor (an ephemeral sequential create and
   its delete, issued raw with aiozk's client), lockkit, aiozk's ``Lock`` recipe, and
   kazoo's ``Lock`` (synchronous, in a worker thread);
2. 8, 64 and 512 tasks (or threads) on one lock: lockkit over two clients, aiozk's
   ``Lock`` (one recipe object per task), kazoo in threads: acquisitions/s, handoff
   share and latency, the longest wait and the per-worker spread;
3. 1,000 distinct locks acquired (all at once) and held: the time, against the floor
   (1,000 ephemeral sequential creates under one existing parent) and aiozk's recipe.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import shutil
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import aiozk
import anyio

import lockkit

from .harness import (
    Contender,
    Figures,
    Result,
    SyncLock,
    check,
    contention,
    cycles,
    interleave,
    show,
    thread_cycles,
    threads_contended,
    wanted,
)

SUITE = "zookeeper"
TASKS = (8, 64, 512)
_versions: dict[str, str] = {}


def server_versions() -> dict[str, str]:
    return dict(_versions)


@contextlib.asynccontextmanager
async def _zookeeper() -> AsyncIterator[str]:
    """``LOCKKIT_BENCH_ZOOKEEPER_URL``, or a fresh server stopped afterwards."""
    given = os.environ.get("LOCKKIT_BENCH_ZOOKEEPER_URL")
    if given:
        yield given
        return
    from tests.servers.zookeeper import ZooKeeperServer

    workdir = Path(tempfile.mkdtemp(prefix="lockkit-bench-zookeeper-"))
    server = ZooKeeperServer("bench-zookeeper", workdir)
    try:
        server.start()
        print(f"zookeeper: started a server on {server.hosts}")
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


class _Suite:
    def __init__(self, url: str, duration: float) -> None:
        self.url = url
        self.hosts = url.split("://", 1)[1].split("/", 1)[0]
        self.duration = duration
        self.base = f"/bench-{secrets.token_hex(3)}"
        self.results: list[Result] = []
        self.missed: list[str] = []
        self.floor = math.nan

    def add(self, name: str, figures: dict[str, float], checks: Sequence[str] = ()) -> None:
        notes = "; ".join(checks)
        self.missed += [f"{name}: {c}" for c in checks if "MISSED" in c]
        self.results.append(Result(SUITE, name, figures, notes))
        print(f"  {name}: {show(figures)}" + (f"\n    {notes}" if notes else ""), flush=True)

    async def section(self, title: str, limit: float, body: Callable[[], Awaitable[None]]) -> None:
        print(f"zookeeper: {title}", flush=True)
        try:
            with anyio.fail_after(limit):
                await body()
        except Exception as exc:
            traceback.print_exc()
            text = (
                f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, TimeoutError)
                else (f"stalled: not done within {limit:g}s")
            )
            self.results.append(Result(SUITE, title, {}, text, failed=True))
            print(f"  FAILED: {text}", flush=True)

    @contextlib.asynccontextmanager
    async def raw(self) -> AsyncIterator[aiozk.ZKClient]:
        client = aiozk.ZKClient(self.hosts)
        await client.start()
        try:
            yield client
        finally:
            await client.close()

    # -- 1-2. uncontended and contended, every contender interleaved --------------------

    async def measure_uncontended(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            raw = await stack.enter_async_context(self.raw())
            version = raw.session.conn.version_info
            _versions["zookeeper"] = ".".join(map(str, version))
            floor_dir = f"{self.base}/floor"
            await raw.ensure_path(floor_dir)

            async def floor_cycle() -> None:
                path = await raw.create(f"{floor_dir}/n-", ephemeral=True, sequential=True)
                await raw.delete(path)

            locks = await stack.enter_async_context(lockkit.connect(self.url))
            lock = locks.lock(f"{self.base.strip('/')}-uncontended", ttl=30)

            async def lockkit_cycle() -> None:
                await lock.acquire()
                await lock.release()

            recipe = raw.recipes.Lock(f"{self.base}/aiozk-uncontended")

            async def aiozk_cycle() -> None:
                await recipe.acquire()
                await recipe.release()

            contenders = [
                Contender(
                    "floor: create ephemeral sequential + delete (aiozk)",
                    "floor",
                    cycles(floor_cycle),
                ),
                Contender("lockkit", "lockkit", cycles(lockkit_cycle)),
                Contender("aiozk Lock", "peer", cycles(aiozk_cycle)),
                await self.kazoo(stack, None, f"{self.base}/kazoo-uncontended"),
            ]
            found = await interleave(
                SUITE, "uncontended", contenders, self.duration, "cycles_per_s"
            )
        self.results += found
        for r in found:
            if r.role == "floor" and not r.failed:
                self.floor = r.figures["cycles_per_s"]

    async def kazoo(
        self, stack: contextlib.AsyncExitStack, tasks: int | None, path: str
    ) -> Contender:
        """kazoo's ``Lock`` on a client of its own, in threads."""
        label = "kazoo Lock (threads)"
        try:
            from kazoo.client import KazooClient
        except ImportError as exc:
            return Contender(label, "peer", None, f"kazoo: not installed: {exc}")
        client = KazooClient(hosts=self.hosts)
        await anyio.to_thread.run_sync(client.start)

        def stop() -> None:
            client.stop()
            client.close()

        stack.callback(stop)

        from kazoo.exceptions import LockTimeout

        def make() -> SyncLock:
            lock = client.Lock(path)

            def acquire() -> bool:
                try:
                    return bool(lock.acquire(timeout=1))
                except LockTimeout:  # kazoo raises where the others return False
                    return False

            return acquire, lock.release

        if tasks is None:
            return Contender(label, "peer", thread_cycles(make))
        n = tasks

        async def in_threads(duration: float) -> Figures:
            return await threads_contended(lambda _i: make(), n, duration)

        return Contender(label, "peer", in_threads)

    async def measure_contended(self) -> None:
        for tasks in TASKS:
            name = f"{self.base.strip('/')}-contended-{tasks}"
            async with contextlib.AsyncExitStack() as stack:
                clients = [await stack.enter_async_context(lockkit.connect(self.url)) for _ in "ab"]
                mine = [c.lock(name, ttl=30, timeout=60) for c in clients]
                raw = await stack.enter_async_context(self.raw())
                path = f"{self.base}/aiozk-contended-{tasks}"
                contenders = [
                    Contender("lockkit", "lockkit", contention(tasks, lambda i, m=mine: m[i % 2])),
                    Contender(
                        "aiozk Lock",
                        "peer",
                        contention(tasks, lambda _i, p=path, r=raw: r.recipes.Lock(p)),
                    ),
                    await self.kazoo(stack, tasks, f"{self.base}/kazoo-contended-{tasks}"),
                ]
                self.results += await interleave(
                    SUITE, f"contended {tasks}", contenders, self.duration, "acquisitions_per_s"
                )

    # -- 3. 1,000 locks held ------------------------------------------------------------

    async def measure_many_held(self, count: int = 1000) -> None:
        async with self.raw() as raw:
            parent = f"{self.base}/held-floor"
            await raw.ensure_path(parent)
            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(count):
                    tg.start_soon(
                        lambda: raw.create(f"{parent}/n-", ephemeral=True, sequential=True)
                    )
            plain = time.perf_counter() - started
            self.add(
                f"floor: {count:,} ephemeral sequential creates in one parent", {"seconds": plain}
            )
            # what a lock of its own needs: its directory and its node, in one transaction
            parent = f"{self.base}/held-dirs"
            await raw.ensure_path(parent)

            async def node_in_own_dir(i: int) -> None:
                txn = raw.begin_transaction()
                txn.create(f"{parent}/{i}", container=True)
                txn.create(f"{parent}/{i}/n-", ephemeral=True, sequential=True)
                assert await txn.commit()

            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for i in range(count):
                    tg.start_soon(node_in_own_dir, i)
            floor = time.perf_counter() - started
        self.add(
            f"floor: {count:,} nodes, each created with its own directory (one multi each)",
            {"seconds": floor},
        )
        async with lockkit.connect(self.url) as locks:
            prefix = f"{self.base.strip('/')}-held-"
            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for i in range(count):
                    tg.start_soon(locks.lock(f"{prefix}{i}", ttl=60).acquire)
            mine = time.perf_counter() - started
            held = locks.held_count
        self.add(
            f"lockkit: {count:,} distinct locks acquired and held",
            {
                "seconds": mine,
                "x_floor_time": mine / floor,
                "x_one_parent_time": mine / plain,
                "held": float(held),
            },
            [check("x_floor_time", mine / floor, 1.2, at_most=True)],
        )
        async with self.raw() as raw:
            recipes = [raw.recipes.Lock(f"{self.base}/aiozk-held/{i}") for i in range(count)]
            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for recipe in recipes:
                    tg.start_soon(recipe.acquire)
            theirs = time.perf_counter() - started
        self.add(
            f"aiozk Lock: {count:,} distinct locks acquired",
            {"seconds": theirs, "x_floor_time": theirs / floor},
        )


async def run(duration: float) -> list[Result]:
    async with _zookeeper() as url:
        suite = _Suite(url, duration)
        await suite.section("floor and uncontended", 300, suite.measure_uncontended)
        await suite.section("contended", 600, suite.measure_contended)
        if wanted("1,000 locks held"):
            await suite.section("1,000 locks held", 180, suite.measure_many_held)
        if suite.missed:
            print(f"zookeeper: {len(suite.missed)} target(s) missed:")
            for line in suite.missed:
                print(f"  - {line}")
        else:
            print("zookeeper: every target met")
        return suite.results
