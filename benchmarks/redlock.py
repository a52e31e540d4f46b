"""redlock:// on 3 and 5 masters against a raw fan-out floor and two Redlock libraries.

The suite starts 5 Redis masters of its own (``tests.servers.redis.RedisMasters``, the
binary ``make deps`` installs; or ``LOCKKIT_BENCH_REDLOCK_URL``, a ``redlock://`` URL
with at least 5 hosts) and measures, with the first 3 and then all 5 masters:

1. uncontended acquire + release cycles, the contenders taking turns (``rounds`` rounds,
   each keeps its best): the floor (the same two fan-out rounds lockkit needs, issued raw
   through one ``redis.asyncio`` client per master: ``SET NX PX`` on every master at
   once, then ``DEL`` on every master at once), lockkit, aioredlock and pottery's
   ``AIORedlock`` (neither gives tokens; both let a free lock go to whoever asks);
2. 8 tasks over two lockkit clients on one lock: acquisitions/s, handoff latency, and
   how many acquisitions by others one wait saw (FIFO keeps it at tasks - 1).

Targets are checked and reported, never enforced.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import secrets
import shutil
import tempfile
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio as aioredis

import lockkit
from lockkit.backends.redlock import RedlockBackend

from .harness import Result, check, contended, rate, show

SUITE = "redlock"
_versions: dict[str, str] = {}


def server_versions() -> dict[str, str]:
    return dict(_versions)


def _optional(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        print(f"redlock: {module} is not installed; skipping it (see benchmarks/requirements.txt)")
        return None


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

    # -- 1. uncontended ----------------------------------------------------------------

    async def measure_uncontended(self, count: int, rounds: int = 3) -> None:
        hosts = self.hosts[:count]
        name = f"{self.base}:{count}"
        async with contextlib.AsyncExitStack() as stack:
            raw = []
            for hostport in hosts:
                client = aioredis.Redis.from_url(f"redis://{hostport}/0")
                stack.push_async_callback(client.aclose)
                raw.append(client)
            locks = await stack.enter_async_context(lockkit.connect(self.url(count)))
            backend = locks.backend
            assert isinstance(backend, RedlockBackend)
            lock = locks.lock(f"{name}:lockkit", ttl=30)
            floor_key = f"{name}:floor"

            async def floor() -> None:
                await asyncio.gather(*(c.set(floor_key, "x", nx=True, px=30000) for c in raw))
                await asyncio.gather(*(c.delete(floor_key) for c in raw))

            async def lockkit_cycle() -> None:
                await lock.acquire()
                await lock.release()

            steps: dict[str, Callable[[], Awaitable[object]]] = {
                f"floor ({count} x SET NX PX, then {count} x DEL)": floor,
                "lockkit": lockkit_cycle,
            }
            aioredlock = _optional("aioredlock")
            if aioredlock is not None:
                manager = aioredlock.Aioredlock([f"redis://{h}" for h in hosts])
                stack.push_async_callback(manager.destroy)
                resource = f"{name}:aioredlock"

                async def aioredlock_cycle() -> None:
                    held = await manager.lock(resource, lock_timeout=30)
                    await manager.unlock(held)

                steps["aioredlock"] = aioredlock_cycle
            pottery = _optional("pottery")
            if pottery is not None:
                conns = []
                for hostport in hosts:
                    conn = aioredis.Redis.from_url(f"redis://{hostport}/0")
                    stack.push_async_callback(conn.aclose)
                    conns.append(conn)
                redlock = pottery.AIORedlock(
                    key=f"{name}:pottery", masters=set(conns), auto_release_time=30
                )

                async def pottery_cycle() -> None:
                    await redlock.acquire()
                    await redlock.release()

                steps["pottery AIORedlock"] = pottery_cycle
            best: dict[str, float] = {}
            failed: dict[str, str] = {}
            before = dict(backend.statistics().requests)
            for _ in range(rounds):  # interleaved: each round measures every contender
                for label, step in list(steps.items()):
                    try:
                        best[label] = max(best.get(label, 0.0), await rate(step, self.duration))
                    except Exception as exc:  # a peer that breaks is reported, not fatal
                        failed[label] = f"{type(exc).__name__}: {exc}"
                        del steps[label]
            after = dict(backend.statistics().requests)
        floor_rate = best.pop(next(iter(best)))
        self.add(
            f"{count} masters, uncontended: floor (2 raw fan-out rounds)",
            {"cycles_per_s": floor_rate},
        )
        rounds_per_cycle = (after.get("acquire", 0) - before.get("acquire", 0)) / max(
            1, (after.get("release", 0) - before.get("release", 0))
        )
        for label, cycles in best.items():
            figures = {"cycles_per_s": cycles, "ratio_to_floor": cycles / floor_rate}
            checks = []
            if label == "lockkit":
                fences = after.get("fence", 0) - before.get("fence", 0)
                figures["write_back_rounds"] = float(fences)
                figures["acquire_rounds_per_cycle"] = rounds_per_cycle
                checks.append(check("ratio_to_floor", cycles / floor_rate, 0.8))
            self.add(f"{count} masters, uncontended: {label}", figures, checks)
        for label, why in failed.items():
            self.results.append(
                Result(SUITE, f"{count} masters, uncontended: {label}", {}, why, failed=True)
            )

    # -- 2. contended --------------------------------------------------------------------

    async def measure_contended(self, count: int, tasks: int = 8) -> None:
        async with lockkit.connect(self.url(count)) as a, lockkit.connect(self.url(count)) as b:
            figures = await contended(
                [a, b], f"{self.base}:{count}:contended", tasks, self.duration
            )
        self.add(
            f"{count} masters, contended {tasks} tasks: lockkit",
            figures,
            [check("max_turns_waited", figures["max_turns_waited"], tasks - 1, exactly=True)],
        )


async def run(duration: float) -> list[Result]:
    async with _masters() as hosts:
        if len(hosts) < 5:
            return [Result(SUITE, "masters", {}, "5 masters are needed", failed=True)]
        suite = _Suite(hosts, duration)
        _versions["redlock"] = "5 independent redis-server masters"
        for count in (3, 5):
            await suite.section(
                f"{count} masters, uncontended", 300, lambda c=count: suite.measure_uncontended(c)
            )
            await suite.section(
                f"{count} masters, contended", 120, lambda c=count: suite.measure_contended(c)
            )
        return suite.results
