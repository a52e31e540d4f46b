"""Measurement helpers shared by every benchmark suite.

Each measurement runs for a fixed wall-clock duration on the running event loop and
returns plain numbers, so one run of ``python -m benchmarks`` can put lockkit, the
protocol floor and other libraries side by side as ratios.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any

import anyio

import lockkit


@dataclasses.dataclass
class Result:
    suite: str
    name: str
    figures: dict[str, float]
    notes: str = ""
    #: The measurement could not be made (the notes say why).
    failed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def show(figures: dict[str, float]) -> str:
    """Figures as one line: small values with three decimals, large ones as integers."""
    return ", ".join(
        f"{k}={v:,.3f}" if abs(v) < 100 else f"{k}={v:,.0f}" for k, v in figures.items()
    )


def check(
    label: str, value: float, limit: float, *, at_most: bool = False, exactly: bool = False
) -> str:
    """One goal's verdict for the notes: ``label >= limit: met (value)`` (or MISSED)."""
    if exactly:
        met, sign = value == limit, "=="
    elif at_most:
        met, sign = value <= limit, "<="
    else:
        met, sign = value >= limit, ">="
    return f"{label} {sign} {limit:g}: {'met' if met else 'MISSED'} ({value:,.3g})"


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


@dataclasses.dataclass(frozen=True, slots=True)
class Ask:
    """When a worker asked for the lock: the time and how many acquisitions there had
    been by then."""

    at: float
    seen: int


class Tally:
    """Who held a contended lock and when; shared by the asyncio and threaded loops.

    A worker calls :meth:`ask` before acquiring, :meth:`acquired` first thing inside the
    critical section and :meth:`releasing` last thing inside it. Pass ``guard`` (a
    ``threading.Lock``) when holders run in several threads.
    """

    def __init__(self, guard: AbstractContextManager[object] | None = None) -> None:
        self._guard: AbstractContextManager[object] = guard or contextlib.nullcontext()
        self.last_holder: int | None = None
        self.last_release = 0.0
        self.acquisitions = 0
        self.handoffs = 0
        self.latencies: list[float] = []
        self.waits: list[float] = []
        self.turns: list[int] = []
        self.cut_off = 0

    def ask(self) -> Ask:
        return Ask(time.perf_counter(), self.acquisitions)

    def acquired(self, worker: int, asked: Ask) -> None:
        now = time.perf_counter()
        with self._guard:
            self.waits.append(now - asked.at)
            self.turns.append(self.acquisitions - asked.seen)
            self.acquisitions += 1
            if self.last_holder is not None and self.last_holder != worker:
                self.handoffs += 1
                self.latencies.append(now - self.last_release)
            self.last_holder = worker

    def releasing(self) -> None:
        with self._guard:
            self.last_release = time.perf_counter()

    def gave_up(self, asked: Ask) -> None:
        """A worker was still waiting when the measurement was cut off."""
        with self._guard:
            self.waits.append(time.perf_counter() - asked.at)
            self.turns.append(self.acquisitions - asked.seen)
            self.cut_off += 1

    def figures(self, elapsed: float) -> dict[str, float]:
        per_acq = elapsed / max(1, self.acquisitions)
        return {
            "acquisitions": float(self.acquisitions),
            "acquisitions_per_s": self.acquisitions / elapsed,
            "handoff_share": self.handoffs / max(1, self.acquisitions - 1),
            "handoff_p50_ms": percentile(self.latencies, 50) * 1000,
            "handoff_p99_ms": percentile(self.latencies, 99) * 1000,
            "max_wait_over_mean_cycle": max(self.waits, default=0.0) / per_acq,
            "p99_wait_over_mean_cycle": percentile(self.waits, 99) / per_acq,
            "max_turns_waited": float(max(self.turns, default=0)),
            "mean_wait_ms": statistics.fmean(self.waits) * 1000 if self.waits else float("nan"),
            "cut_off_waiters": float(self.cut_off),
        }


async def contended_locks(
    make_lock: Callable[[int], AbstractAsyncContextManager[object]],
    tasks: int,
    duration: float,
    *,
    grace: float | None = None,
) -> dict[str, float]:
    """``tasks`` tasks take turns on one lock; ``make_lock(i)`` gives task ``i`` the
    (reusable) async context manager it enters for each turn.

    Figures: acquisitions/s; share of acquisitions that went to a different task than
    the previous holder (handoffs); handoff latency (the previous holder about to
    release -> the next holder returning from acquire) p50/p99 in ms; the longest
    single wait and the 99th percentile compared with the mean time per acquisition,
    and the most acquisitions by others during one wait (fairness: FIFO keeps it at
    ``tasks - 1`` whatever the scheduling hiccups). Tasks still
    waiting ``grace`` seconds (default: ``max(2, duration)``) after the end are cut
    off: their wait so far counts, and ``cut_off_waiters`` says how many there were.
    """
    tally = Tally()
    started = time.perf_counter()
    stop_at = started + duration
    hard_stop = anyio.current_time() + duration + (max(2.0, duration) if grace is None else grace)

    async def worker(i: int) -> None:
        lock = make_lock(i)
        asked: Ask | None = None
        with anyio.CancelScope(deadline=hard_stop) as scope:
            while time.perf_counter() < stop_at:
                asked = tally.ask()
                async with lock:
                    tally.acquired(i, asked)
                    asked = None
                    tally.releasing()
        if scope.cancelled_caught and asked is not None:
            tally.gave_up(asked)

    async with anyio.create_task_group() as tg:
        for i in range(tasks):
            tg.start_soon(worker, i)
    return tally.figures(time.perf_counter() - started)


async def contended(
    clients: list[lockkit.LockClient], name: str, tasks: int, duration: float
) -> dict[str, float]:
    """``tasks`` tasks (spread over ``clients``) take turns on one lockkit lock; see
    :func:`contended_locks` for the figures."""

    def make_lock(i: int) -> lockkit.Lock:
        return clients[i % len(clients)].lock(name, ttl=30, timeout=60)

    return await contended_locks(make_lock, tasks, duration)
