"""zookeeper:// against the protocol floor and other ZooKeeper lock recipes, on one server.

The suite starts its own ZooKeeper (``tests.servers.zookeeper.ZooKeeperServer``, the
jars ``make deps`` caches; or ``LOCKKIT_BENCH_ZOOKEEPER_URL``) and measures:

1. uncontended acquire + release cycles, the contenders taking turns (``rounds`` rounds,
   each keeps its best): the floor (an ephemeral sequential create and its delete,
   issued raw with aiozk's client), lockkit, aiozk's ``Lock`` recipe, and kazoo's
   ``Lock`` (synchronous, in a worker thread);
2. 8 and 64 tasks on one lock: lockkit on one client and over two, aiozk's ``Lock``
   (one recipe object per task), kazoo in 8 threads: acquisitions/s, handoff latency,
   and how many acquisitions by others one wait saw (FIFO keeps it at tasks - 1);
3. 1,000 distinct locks acquired (all at once) and held: the time, against the floor
   (1,000 ephemeral sequential creates under one existing parent) and aiozk's recipe.

Targets (from the backend's design notes) are checked and reported, never enforced.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiozk
import anyio

import lockkit

from .harness import Result, Tally, check, contended, contended_locks, rate, show

SUITE = "zookeeper"
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


def _kazoo() -> Any | None:
    try:
        from kazoo.client import KazooClient
    except ImportError:
        print("zookeeper: kazoo is not installed; skipping it (benchmarks/requirements.txt)")
        return None
    return KazooClient


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

    # -- 1. uncontended ----------------------------------------------------------------

    async def measure_uncontended(self, rounds: int = 3) -> None:
        runners: dict[str, Callable[[float], Awaitable[float]]] = {}
        async with contextlib.AsyncExitStack() as stack:
            raw = await stack.enter_async_context(self.raw())
            version = raw.session.conn.version_info
            _versions["zookeeper"] = ".".join(map(str, version))
            floor_dir = f"{self.base}/floor"
            await raw.ensure_path(floor_dir)

            async def floor_cycle() -> None:
                path = await raw.create(f"{floor_dir}/n-", ephemeral=True, sequential=True)
                await raw.delete(path)

            runners["floor"] = lambda d: rate(floor_cycle, d)
            locks = await stack.enter_async_context(lockkit.connect(self.url))
            lock = locks.lock(f"{self.base.strip('/')}-uncontended", ttl=30)

            async def lockkit_cycle() -> None:
                await lock.acquire()
                await lock.release()

            runners["lockkit"] = lambda d: rate(lockkit_cycle, d)
            recipe = raw.recipes.Lock(f"{self.base}/aiozk-uncontended")

            async def aiozk_cycle() -> None:
                await recipe.acquire()
                await recipe.release()

            runners["aiozk_lock"] = lambda d: rate(aiozk_cycle, d)
            kazoo = _kazoo()
            if kazoo is not None:
                runners["kazoo_lock"] = lambda d: anyio.to_thread.run_sync(
                    _kazoo_uncontended, kazoo, self.hosts, f"{self.base}/kazoo-uncontended", d
                )
            best: dict[str, float] = {}
            for _ in range(rounds):
                for who, run in runners.items():
                    best[who] = max(best.get(who, 0.0), await run(self.duration / 2))
        self.floor = best["floor"]
        floor_name = "floor: create ephemeral sequential + delete (aiozk, raw)"
        self.add(floor_name, {"cycles_per_s": self.floor})
        for who in ("lockkit", "aiozk_lock", "kazoo_lock"):
            if who not in best:
                continue
            figures = {"cycles_per_s": best[who], "x_floor": best[who] / self.floor}
            checks = [check("x_floor", figures["x_floor"], 0.85)] if who == "lockkit" else []
            self.add(f"{who} uncontended acquire + release", figures, checks)

    # -- 2. contended -------------------------------------------------------------------

    async def measure_contended(self) -> None:
        for tasks, goal in ((8, 1200.0), (64, 900.0)):
            for clients in (1, 2):
                name = f"{self.base.strip('/')}-contended-{tasks}-{clients}"
                async with contextlib.AsyncExitStack() as stack:
                    made = [
                        await stack.enter_async_context(lockkit.connect(self.url))
                        for _ in range(clients)
                    ]
                    figures = await contended(made, name, tasks, self.duration)
                figures["x_floor"] = figures["acquisitions_per_s"] / self.floor
                self.add(
                    f"lockkit contended, {tasks} tasks on {clients} client(s)",
                    figures,
                    [
                        check("acquisitions_per_s", figures["acquisitions_per_s"], goal),
                        check("handoff_p50_ms", figures["handoff_p50_ms"], 0.7, at_most=True),
                        check(
                            "FIFO: max_turns_waited",
                            figures["max_turns_waited"],
                            tasks - 1,
                            at_most=True,
                        ),
                    ],
                )
            async with self.raw() as raw:
                path = f"{self.base}/aiozk-contended-{tasks}"

                def make_lock(_i: int, path: str = path, raw: Any = raw) -> Any:
                    return raw.recipes.Lock(path)

                figures = await contended_locks(make_lock, tasks, self.duration)
            figures["x_floor"] = figures["acquisitions_per_s"] / self.floor
            self.add(f"aiozk Lock contended, {tasks} tasks", figures)
        kazoo = _kazoo()
        if kazoo is not None:
            path = f"{self.base}/kazoo"
            figures = await _kazoo_contended(kazoo, self.hosts, path, 8, self.duration)
            figures["x_floor"] = figures["acquisitions_per_s"] / self.floor
            self.add("kazoo Lock contended, 8 threads", figures)

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


def _kazoo_uncontended(kazoo: Any, hosts: str, path: str, duration: float) -> float:
    client = kazoo(hosts=hosts)
    client.start()
    try:
        lock = client.Lock(path)
        for _ in range(50):
            lock.acquire()
            lock.release()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < duration:
            lock.acquire()
            lock.release()
            count += 1
        return count / (time.perf_counter() - start)
    finally:
        client.stop()
        client.close()


async def _kazoo_contended(
    kazoo: Any, hosts: str, path: str, threads: int, duration: float
) -> dict[str, float]:
    tally = Tally(threading.Lock())
    client = kazoo(hosts=hosts)
    client.start()
    stop_at = time.perf_counter() + duration

    def worker(i: int) -> None:
        lock = client.Lock(path)
        while time.perf_counter() < stop_at:
            asked = tally.ask()
            with lock:
                tally.acquired(i, asked)
                tally.releasing()

    started = time.perf_counter()
    try:
        async with anyio.create_task_group() as tg:
            for i in range(threads):
                tg.start_soon(anyio.to_thread.run_sync, worker, i)
    finally:
        client.stop()
        client.close()
    return tally.figures(time.perf_counter() - started)


async def run(duration: float) -> list[Result]:
    async with _zookeeper() as url:
        suite = _Suite(url, duration)
        await suite.section("floor and uncontended", 300, suite.measure_uncontended)
        if math.isnan(suite.floor):
            return suite.results
        await suite.section("contended", 300, suite.measure_contended)
        await suite.section("1,000 locks held", 180, suite.measure_many_held)
        if suite.missed:
            print(f"zookeeper: {len(suite.missed)} target(s) missed:")
            for line in suite.missed:
                print(f"  - {line}")
        else:
            print("zookeeper: every target met")
        return suite.results
