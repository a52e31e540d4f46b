"""Measurement helpers shared by every benchmark suite.

Each measurement runs for a fixed wall-clock duration on the running event loop and
returns plain numbers, so one run of ``python -m benchmarks`` can put lockkit, the
protocol floor and other libraries side by side as ratios.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

import lockkit


@dataclasses.dataclass
class Result:
    suite: str
    name: str
    figures: dict[str, float]
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def rate(step: Callable[[], Awaitable[object]], duration: float) -> float:
    """Calls of ``step`` per second, run back to back for ``duration`` seconds."""
    for _ in range(50):  # warm up connections, script caches, allocators
        await step()
    count = 0
    start = time.perf_counter()
    deadline = start + duration
    while True:
        for _ in range(20):
            await step()
        count += 20
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


async def uncontended_cycles(locks: lockkit.LockClient, name: str, duration: float) -> float:
    """acquire + release cycles per second on one free lock, one task."""
    lock = locks.lock(name, ttl=30)

    async def cycle() -> None:
        await lock.acquire()
        await lock.release()

    return await rate(cycle, duration)


async def contended(
    clients: list[lockkit.LockClient], name: str, tasks: int, duration: float
) -> dict[str, float]:
    """``tasks`` tasks (spread over ``clients``) take turns on one lock.

    Figures: acquisitions/s; share of acquisitions that went to a different task than
    the previous holder (handoffs); handoff latency (the previous holder about to
    release -> the next holder returning from acquire) p50/p99 in ms; the longest
    single wait compared with the mean time per acquisition (fairness).
    """
    last_holder: int | None = None
    last_release = 0.0
    acquisitions = 0
    handoffs = 0
    latencies: list[float] = []
    waits: list[float] = []
    stop_at = time.perf_counter() + duration
    started = time.perf_counter()

    async def worker(i: int) -> None:
        nonlocal last_holder, last_release, acquisitions, handoffs
        lock = clients[i % len(clients)].lock(name, ttl=30, timeout=60)
        while time.perf_counter() < stop_at:
            asked = time.perf_counter()
            async with lock:
                now = time.perf_counter()
                waits.append(now - asked)
                acquisitions += 1
                if last_holder is not None and last_holder != i:
                    handoffs += 1
                    latencies.append(now - last_release)
                last_holder = i
                last_release = time.perf_counter()

    async with anyio.create_task_group() as tg:
        for i in range(tasks):
            tg.start_soon(worker, i)
    elapsed = time.perf_counter() - started
    per_acq = elapsed / max(1, acquisitions)
    return {
        "acquisitions_per_s": acquisitions / elapsed,
        "handoff_share": handoffs / max(1, acquisitions - 1),
        "handoff_p50_ms": percentile(latencies, 50) * 1000,
        "handoff_p99_ms": percentile(latencies, 99) * 1000,
        "max_wait_over_mean_cycle": max(waits, default=0.0) / per_acq,
        "mean_wait_ms": statistics.fmean(waits) * 1000 if waits else float("nan"),
    }
