"""memory:// against the floor of an in-process lock, ``asyncio.Lock``.

Scenarios, every contender interleaved (see :func:`benchmarks.harness.interleave`):

1. uncontended acquire + release, one task;
2. 8, 64 and 512 tasks on one lock (lockkit over two clients of one ``memory://``
   store; the memory backend is always fair);
3. 10,000 waiters on one lock: the time to queue them, to serve them all one after the
   other, and the memory they take while queued (resident set growth per waiter);
4. 10,000 locks held by one process: the time to take them and the memory each takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio

import lockkit

from . import harness
from .harness import Contender, Figures, Result, contention, cycles, interleave

SUITE = "memory"
TASKS = (8, 64, 512)
WAITERS = 10_000
HELD = 10_000


def crowd(count: int) -> int:
    """``count``, or a tenth of it under ``--smoke``."""
    return count // 10 if harness.SMOKE else count


def rss_bytes() -> int:
    """The resident set size of this process now (Linux), or 0."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    import resource

    return pages * resource.getpagesize()


async def many_waiters(
    hold: Callable[[], Awaitable[object]],
    release: Callable[[], Awaitable[object]],
    enter: Callable[[], contextlib.AbstractAsyncContextManager[object]],
    queued: Callable[[], Awaitable[int]],
    count: int,
    *,
    limit: float = 120.0,
) -> Figures:
    """``count`` tasks queue on a lock that ``hold`` took; then ``release`` lets them
    through one by one (each enters and leaves at once). Figures: seconds until
    ``queued()`` sees them all, seconds until the last was served, handoffs per second,
    and resident set growth per queued waiter."""
    served = 0
    all_served = anyio.Event()

    async def waiter() -> None:
        nonlocal served
        async with enter():
            served += 1
        if served == count:
            all_served.set()

    gc.collect()
    rss_before = rss_bytes()
    await hold()
    with anyio.fail_after(limit):
        async with anyio.create_task_group() as tg:
            started = time.perf_counter()
            for _ in range(count):
                tg.start_soon(waiter)
            while await queued() < count:  # noqa: ASYNC110 (polled: no event to wait on)
                await anyio.sleep(0.01)
            enqueue_s = time.perf_counter() - started
            rss_queued = rss_bytes()
            started = time.perf_counter()
            await release()
            await all_served.wait()
            drain_s = time.perf_counter() - started
    return {
        "handoffs_per_s": count / drain_s,
        "enqueue_s": enqueue_s,
        "drain_s": drain_s,
        "rss_bytes_per_waiter": max(0, rss_queued - rss_before) / count,
    }


async def many_held(
    take: Callable[[str], Awaitable[object]],
    count: int,
    *,
    traced: int = 2_000,
    after: Callable[[], Awaitable[Figures]] | None = None,
) -> Figures:
    """``count`` distinct locks (``take(name)`` acquires one and keeps it) taken by 50
    tasks: locks taken per second and resident set growth per lock; then ``traced`` more
    under ``tracemalloc`` for the Python memory each held lock takes (tracing slows
    acquisition down, so it is kept out of the timing). ``after`` adds figures while all
    of them are held (renewal traffic)."""
    workers = 50

    async def take_all(prefix: str, n: int) -> float:
        async def part(indices: range) -> None:
            for i in indices:
                await take(f"{prefix}{i}")

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for w in range(workers):
                tg.start_soon(part, range(w, n, workers))
        return time.perf_counter() - started

    gc.collect()
    rss_before = rss_bytes()
    elapsed = await take_all("t", count)
    rss_growth = max(0, rss_bytes() - rss_before)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await take_all("m", traced)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    figures = {
        "acquisitions_per_s": count / elapsed,
        "seconds": elapsed,
        "rss_bytes_per_lock": rss_growth / count,
        "traced_bytes_per_lock": grown / traced,
    }
    if after is not None:
        figures.update(await after())
    return figures


@contextlib.asynccontextmanager
async def _clients(url: str) -> AsyncIterator[tuple[lockkit.LockClient, lockkit.LockClient]]:
    async with lockkit.connect(url) as a, lockkit.connect(url) as b:
        yield a, b


async def run(duration: float) -> list[Result]:
    results: list[Result] = []
    async with (
        _clients("memory://bench") as (a, b),
    ):
        floor_lock = asyncio.Lock()

        async def floor_cycle() -> None:
            await floor_lock.acquire()
            floor_lock.release()

        lock = a.lock("uncontended", ttl=30)

        async def lockkit_cycle() -> None:
            await lock.acquire()
            await lock.release()

        results += await interleave(
            SUITE,
            "uncontended",
            [
                Contender("floor: asyncio.Lock", "floor", cycles(floor_cycle)),
                Contender("lockkit", "lockkit", cycles(lockkit_cycle)),
            ],
            duration,
            "cycles_per_s",
        )
        for tasks in TASKS:
            shared = asyncio.Lock()
            mine = [c.lock(f"contended-{tasks}", ttl=30, timeout=120) for c in (a, b)]
            results += await interleave(
                SUITE,
                f"contended {tasks}",
                [
                    Contender(
                        "floor: asyncio.Lock", "floor", contention(tasks, lambda i, s=shared: s)
                    ),
                    Contender("lockkit", "lockkit", contention(tasks, lambda i, m=mine: m[i % 2])),
                ],
                duration,
                "acquisitions_per_s",
            )

        async def floor_waiters(_duration: float) -> Figures:
            gate = asyncio.Lock()

            async def queued() -> int:
                return len(getattr(gate, "_waiters", None) or ())

            async def hold() -> None:
                await gate.acquire()

            async def release() -> None:
                gate.release()

            return await many_waiters(hold, release, lambda: gate, queued, crowd(WAITERS))

        rounds = 0

        async def lockkit_waiters(_duration: float) -> Figures:
            nonlocal rounds
            rounds += 1
            name = f"waiters-{rounds}"
            holder = a.lock(name, ttl=60)
            waiting = a.lock(name, ttl=60, timeout=None)

            async def queued() -> int:
                return (await a.inspect(name)).waiters

            return await many_waiters(
                holder.acquire, holder.release, lambda: waiting, queued, crowd(WAITERS)
            )

        results += await interleave(
            SUITE,
            f"{WAITERS:,} waiters on one lock",
            [
                Contender("floor: asyncio.Lock", "floor", floor_waiters),
                Contender("lockkit", "lockkit", lockkit_waiters),
            ],
            duration,
            "handoffs_per_s",
        )

        async def floor_held(_duration: float) -> Figures:
            locks: list[asyncio.Lock] = []

            async def take(_name: str) -> None:
                lock = asyncio.Lock()
                await lock.acquire()
                locks.append(lock)

            return await many_held(take, crowd(HELD))

        async def lockkit_held(_duration: float) -> Figures:
            nonlocal rounds
            rounds += 1
            taken: list[Any] = []

            async def take(name: str) -> None:
                held = a.lock(f"held-{rounds}-{name}", ttl=30)
                await held.acquire()
                taken.append(held)

            try:
                return await many_held(take, crowd(HELD))
            finally:
                for held in taken:
                    await held.release()

        results += await interleave(
            SUITE,
            f"{HELD:,} locks held",
            [
                Contender("floor: asyncio.Lock", "floor", floor_held),
                Contender("lockkit", "lockkit", lockkit_held),
            ],
            duration,
            "acquisitions_per_s",
        )
    return results
