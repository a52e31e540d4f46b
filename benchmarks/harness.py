"""Measurement helpers shared by every benchmark suite.

Each measurement runs for a fixed wall-clock duration on the running event loop and
returns plain numbers, so one run of ``python -m benchmarks`` can put lockkit, the
protocol floor and other libraries side by side as ratios.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import statistics
import threading
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any

import anyio

import lockkit


@dataclasses.dataclass
class Result:
    suite: str
    name: str
    #: Medians over the repetitions when there were several.
    figures: dict[str, float]
    notes: str = ""
    #: The measurement could not be made (the notes say why).
    failed: bool = False
    #: Which comparison the result belongs to ("uncontended", "contended 64", ...);
    #: results of one scenario in one suite ran interleaved and compare as ratios.
    scenario: str = ""
    #: Who was measured ("lockkit", "redis-py asyncio Lock (threads)", ...).
    contender: str = ""
    #: "floor", "lockkit" or "peer" (empty for single measurements).
    role: str = ""
    #: The figure the scenario is ranked by (higher is better).
    primary: str = ""
    #: The figures of each repetition, in order; ``figures`` holds their medians.
    runs: list[dict[str, float]] = dataclasses.field(default_factory=list)

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
        self.per_worker: Counter[int] = Counter()

    def ask(self) -> Ask:
        return Ask(time.perf_counter(), self.acquisitions)

    def acquired(self, worker: int, asked: Ask) -> None:
        now = time.perf_counter()
        with self._guard:
            self.waits.append(now - asked.at)
            self.turns.append(self.acquisitions - asked.seen)
            self.acquisitions += 1
            self.per_worker[worker] += 1
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

    def figures(self, elapsed: float, workers: int | None = None) -> dict[str, float]:
        """The figures; ``workers`` (how many took part) makes a worker that never got
        the lock count in the spread."""
        per_acq = elapsed / max(1, self.acquisitions)
        counts = list(self.per_worker.values())
        counts += [0] * max(0, (workers or 0) - len(counts))
        mean_turns = statistics.fmean(counts) if counts else 0.0
        return {
            "acquisitions": float(self.acquisitions),
            "acquisitions_per_s": self.acquisitions / elapsed,
            "handoff_share": self.handoffs / max(1, self.acquisitions - 1),
            "handoff_p50_ms": percentile(self.latencies, 50) * 1000,
            "handoff_p99_ms": percentile(self.latencies, 99) * 1000,
            "max_wait_over_mean_cycle": max(self.waits, default=0.0) / per_acq,
            "p99_wait_over_mean_cycle": percentile(self.waits, 99) / per_acq,
            "max_turns_waited": float(max(self.turns, default=0)),
            "max_wait_ms": max(self.waits, default=0.0) * 1000,
            "mean_wait_ms": statistics.fmean(self.waits) * 1000 if self.waits else float("nan"),
            "cut_off_waiters": float(self.cut_off),
            # per-worker spread: the least and the most acquisitions one worker had,
            # against the mean (1.0 and 1.0 when every worker had as many turns)
            "worker_min_over_mean": min(counts, default=0) / mean_turns if mean_turns else 0.0,
            "worker_max_over_mean": max(counts, default=0) / mean_turns if mean_turns else 0.0,
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
    return tally.figures(time.perf_counter() - started, tasks)


async def contended(
    clients: list[lockkit.LockClient], name: str, tasks: int, duration: float
) -> dict[str, float]:
    """``tasks`` tasks (spread over ``clients``) take turns on one lockkit lock; see
    :func:`contended_locks` for the figures."""

    def make_lock(i: int) -> lockkit.Lock:
        return clients[i % len(clients)].lock(name, ttl=30, timeout=60)

    return await contended_locks(make_lock, tasks, duration)


# -- the interleaved runner --------------------------------------------------------------

#: Repetitions of every scenario (``python -m benchmarks --repeats``).
REPEATS = 3
#: ``--smoke``: tiny durations, smaller crowds; only that every contender runs counts.
SMOKE = False
#: ``--scenarios``: prefixes of the scenarios to run (empty: all).
SCENARIOS: tuple[str, ...] = ()
#: Per-measurement limit on top of its duration; a contender past it is reported as
#: stalled and measured no further.
STALL_S = 60.0

Figures = dict[str, float]
Runner = Callable[[float], Awaitable[Figures]]


def wanted(scenario: str) -> bool:
    """Whether ``--scenarios`` selects ``scenario``."""
    return not SCENARIOS or any(scenario.startswith(prefix) for prefix in SCENARIOS)


class Progress:
    """What the suites tell the console while they run (``python -m benchmarks`` puts
    a rich progress bar behind it; without one, nothing is shown)."""

    def step(self, label: str) -> None:
        """A measurement starts."""

    def done(self) -> None:
        """A measurement ended."""


progress = Progress()


@dataclasses.dataclass
class Contender:
    """One library (or the floor) in a scenario: ``run(duration)`` measures it once.

    ``run`` is None when the contender cannot run here; ``why`` says why (a library
    that failed to install, a feature the library lacks); it is reported, not dropped.
    """

    name: str
    role: str
    run: Runner | None
    why: str = ""


def optional(module: str) -> tuple[Any | None, str]:
    """Import a peer library: ``(module, "")``, or ``(None, why)``."""
    try:
        return importlib.import_module(module), ""
    except Exception as exc:  # ImportError, or a library broken by its dependencies
        return None, f"not installed or broken: {type(exc).__name__}: {exc}"


async def interleave(
    suite: str,
    scenario: str,
    contenders: list[Contender],
    duration: float,
    primary: str,
    *,
    repeats: int | None = None,
) -> list[Result]:
    """Measure every contender ``repeats`` times, taking turns: each repetition runs
    each contender once, starting one further along the list than the last, so drift
    on the machine falls on all of them alike. One result per contender: the median of
    each figure, with every repetition in ``runs``. A contender that raises or stalls
    is reported failed and not run again."""
    repeats = repeats or REPEATS
    if not wanted(scenario):
        return []
    runs: dict[str, list[Figures]] = {c.name: [] for c in contenders}
    failures = {c.name: c.why for c in contenders if c.run is None}
    live = [c for c in contenders if c.run is not None]
    for rep in range(repeats):
        order = live[rep % len(live) :] + live[: rep % len(live)] if live else []
        for contender in order:
            if contender.name in failures:
                continue
            assert contender.run is not None
            progress.step(f"{suite}: {scenario}: {contender.name} [{rep + 1}/{repeats}]")
            try:
                with anyio.fail_after(duration + STALL_S):
                    figures = await contender.run(duration)
            except Exception as exc:
                traceback.print_exc()
                if isinstance(exc, TimeoutError):
                    failures[contender.name] = f"stalled: not done within {duration + STALL_S:g}s"
                else:
                    failures[contender.name] = f"failed: {type(exc).__name__}: {exc}"
                print(f"  {scenario}: {contender.name}: {failures[contender.name]}", flush=True)
            else:
                runs[contender.name].append(figures)
            finally:
                progress.done()
    results = []
    for contender in contenders:
        done = runs[contender.name]
        name = f"{scenario}: {contender.name}"
        if contender.name in failures:
            why = failures[contender.name]
            results.append(
                Result(
                    suite,
                    name,
                    {},
                    why,
                    True,
                    scenario,
                    contender.name,
                    contender.role,
                    primary,
                    done,
                )
            )
            continue
        medians = {k: statistics.median(r[k] for r in done) for k in done[0]}
        result = Result(
            suite, name, medians, "", False, scenario, contender.name, contender.role, primary, done
        )
        results.append(result)
        low = min(r[primary] for r in done)
        high = max(r[primary] for r in done)
        print(
            f"  {name}: {primary}={medians[primary]:,.1f} ({low:,.1f}-{high:,.1f}); "
            + show({k: v for k, v in medians.items() if k != primary}),
            flush=True,
        )
    return results


def cycles(step: Callable[[], Awaitable[object]]) -> Runner:
    """A runner of uncontended cycles: ``{"cycles_per_s": ...}``."""

    async def run(duration: float) -> Figures:
        return {"cycles_per_s": await rate(step, duration)}

    return run


# -- synchronous libraries, in threads ----------------------------------------------------

#: ``(acquire, release)`` of a synchronous lock; ``acquire`` returns False on timeout.
SyncLock = tuple[Callable[[], object], Callable[[], object]]


def thread_cycles(make: Callable[[], SyncLock]) -> Runner:
    """A runner of uncontended cycles of a synchronous lock, in one worker thread."""

    def body(duration: float) -> float:
        acquire, release = make()
        for _ in range(50):
            acquire()
            release()
        count = 0
        start = time.perf_counter()
        deadline = start + duration
        while True:
            for _ in range(20):
                acquire()
                release()
            count += 20
            now = time.perf_counter()
            if now >= deadline:
                return count / (now - start)

    async def run(duration: float) -> Figures:
        return {"cycles_per_s": await anyio.to_thread.run_sync(body, duration)}

    return run


async def threads_contended(
    make: Callable[[int], SyncLock], threads: int, duration: float
) -> Figures:
    """``threads`` threads take turns on one synchronous lock; ``make(i)`` gives thread
    ``i`` its lock, whose ``acquire`` gives up (returns False) after a timeout of its
    own (about a second), after which the thread asks again, or stops if the time is
    up. Figures as :func:`contended_locks`."""
    tally = Tally(threading.Lock())
    started = time.perf_counter()
    stop_at = started + duration
    limiter = anyio.CapacityLimiter(threads)

    def worker(i: int) -> None:
        acquire, release = make(i)
        while time.perf_counter() < stop_at:
            asked = tally.ask()
            while acquire() is False:  # its own timeout: go on waiting until the end
                if time.perf_counter() >= stop_at:
                    tally.gave_up(asked)
                    return
            tally.acquired(i, asked)
            tally.releasing()
            release()

    async with anyio.create_task_group() as tg:
        for i in range(threads):
            tg.start_soon(lambda i=i: anyio.to_thread.run_sync(worker, i, limiter=limiter))
    return tally.figures(time.perf_counter() - started, threads)


def contention(
    tasks: int, lock_for: Callable[[int], AbstractAsyncContextManager[object]]
) -> Runner:
    """A runner of ``tasks`` tasks on one asyncio lock (:func:`contended_locks`); tasks
    still waiting half a second after the end are cut off (``cut_off_waiters``)."""

    async def run(duration: float) -> Figures:
        return await contended_locks(lock_for, tasks, duration, grace=0.5)

    return run


class Turns:
    """A lock whose objects serve one acquisition each (or whose API is a pair of
    calls), as a reusable async context manager: ``acquire()`` returns a handle that
    ``release(handle)`` gives back."""

    def __init__(
        self,
        acquire: Callable[[], Awaitable[Any]],
        release: Callable[[Any], Awaitable[object]],
    ) -> None:
        self._acquire = acquire
        self._release = release
        self._held: Any = None

    async def __aenter__(self) -> None:
        self._held = await self._acquire()

    async def __aexit__(self, *exc: object) -> None:
        held, self._held = self._held, None
        await self._release(held)
