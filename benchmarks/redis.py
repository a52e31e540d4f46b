"""redis:// against the protocol floors and the other Redis lock libraries, on one server.

The suite starts its own ``redis-server`` in a temporary directory (or uses
``LOCKKIT_BENCH_REDIS_URL``) and measures, every contender of a scenario interleaved
(:func:`benchmarks.harness.interleave`):

1. uncontended acquire + release cycles: two floors (two ``EVALSHA`` round trips of
   ``return 1``, the least an acquire + release can cost: on one redis-py asyncio
   connection, and on a bare asyncio protocol parsed by hiredis, the wire's limit),
   lockkit, and the peers: redis-py's asyncio ``Lock`` with its shipped 0.1 s retry
   sleep and with 1 ms, its sync ``Lock`` in threads, python-redis-lock (threads),
   pottery's ``Redlock`` (threads) and ``AIORedlock`` on one master, aioredlock on one
   master, and mithril-locks' ``AsyncLock``;
2. 8, 64 and 512 tasks (or threads) on one lock: the same contenders, lockkit over two
   clients and with ``fair=false``: acquisitions/s, handoff share and latency, the
   longest wait and the per-worker spread;
3. 10,000 waiters of one client on one lock: the time to queue them and to serve them
   all; then a closer look: Redis commands and pub/sub subscriptions per handoff, and
   what is left after cancelling them;
4. 10,000 locks held by one client: the time, memory per held lock and the renewal
   traffic.

A peer that does not import is reported as a contender that could not run;
``benchmarks/requirements.txt`` lists them.

The server comes from the test harness (``tests.servers.redis.RedisServer``, imported only
when ``LOCKKIT_BENCH_REDIS_URL`` is not set), so benchmarks and tests start Redis the same
way; run from a source checkout.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import math
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
import traceback
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import hiredis
import redis
import redis.asyncio as aioredis

import lockkit
from lockkit.backends.redis import BATCH, QUEUE_LEASE, RedisBackend

from . import harness
from .harness import (
    Contender,
    Figures,
    Result,
    SyncLock,
    Turns,
    check,
    contention,
    cycles,
    interleave,
    optional,
    percentile,
    show,
    thread_cycles,
    threads_contended,
    wanted,
)
from .memory import HELD, WAITERS, crowd, many_waiters

SUITE = "redis"
TASKS = (8, 64, 512)

#: Filled while the suite runs; read by ``python -m benchmarks`` for the JSON.
_versions: dict[str, str] = {}


def server_versions() -> dict[str, str]:
    return dict(_versions)


@contextlib.asynccontextmanager
async def _redis_url() -> AsyncIterator[str]:
    """``LOCKKIT_BENCH_REDIS_URL``, or a fresh server that is stopped afterwards."""
    given = os.environ.get("LOCKKIT_BENCH_REDIS_URL")
    if given:
        yield given
        return
    from tests.servers.redis import RedisServer

    workdir = Path(tempfile.mkdtemp(prefix="lockkit-bench-redis-"))
    server = RedisServer("bench-redis", workdir)
    try:
        server.start()
        print(f"redis: started redis-server on {server.host}:{server.port}")
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _requests(backend: RedisBackend) -> Counter[str]:
    """Requests the backend sent so far, by kind (script or command)."""
    return Counter(backend.statistics().requests)


async def _commandstats(conn: aioredis.Redis) -> Counter[str]:
    stats = await conn.info("commandstats")
    return Counter({name: int(entry["calls"]) for name, entry in stats.items()})


async def _scan(conn: aioredis.Redis, pattern: str) -> list[str]:
    keys = [key async for key in conn.scan_iter(match=pattern, count=1000)]
    return sorted(_text(k) for k in keys)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _split_fences(keys: Sequence[str]) -> tuple[list[str], list[str]]:
    fences = [k for k in keys if k.endswith(":f")]
    return [k for k in keys if not k.endswith(":f")], fences


class _Monitor:
    """Counts the commands Redis runs while attached (``MONITOR``), in a thread: those
    sent by clients apart from those run inside scripts."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._marker = f"lockkit-bench-monitor-{secrets.token_hex(4)}"
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-monitor", daemon=True)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.error: BaseException | None = None

    def _run(self) -> None:
        conn = redis.Redis.from_url(self._url)
        try:
            open_monitor: Any = conn.monitor  # untyped in redis-py
            with open_monitor() as monitor:
                self._ready.set()
                for entry in monitor.listen():
                    command = str(entry["command"])
                    verb = command.split(" ", 1)[0].upper()
                    if verb == "ECHO" and self._marker in command:
                        return
                    source = "script" if entry["client_type"] == "lua" else "client"
                    self.counts[(source, verb)] += 1
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()
            conn.close()

    async def start(self) -> None:
        self._thread.start()
        await anyio.to_thread.run_sync(self._ready.wait, 10.0)
        if self.error is not None or not self._thread.is_alive():
            raise RuntimeError(f"MONITOR is not available: {self.error!r}")

    async def stop(self, conn: aioredis.Redis) -> None:
        await conn.echo(self._marker)
        await anyio.to_thread.run_sync(self._thread.join, 10.0)
        if self._thread.is_alive():
            raise RuntimeError("MONITOR reader did not see its stop marker")
        if self.error is not None:
            raise RuntimeError(f"MONITOR reader failed: {self.error!r}")

    def total(self, source: str) -> int:
        return sum(n for (src, _), n in self.counts.items() if src == source)

    def by_verb(self, source: str) -> str:
        items = sorted(
            ((verb, n) for (src, verb), n in self.counts.items() if src == source),
            key=lambda item: -item[1],
        )
        return " ".join(f"{verb}={n}" for verb, n in items)


class _Suite:
    def __init__(self, url: str, duration: float) -> None:
        self.url = url
        self.duration = duration
        self.base = f"bench:{secrets.token_hex(3)}"
        self.results: list[Result] = []
        self.missed: list[str] = []
        self.floor = math.nan
        self.uncontended: dict[str, float] = {}
        self.contended: dict[tuple[str, int], float] = {}
        self.lockkit_contended: dict[int, dict[str, float]] = {}

    def add(
        self,
        name: str,
        figures: dict[str, float],
        checks: Sequence[str] = (),
        *,
        at: int | None = None,
    ) -> None:
        notes = "; ".join(checks)
        self.missed += [f"{name}: {c}" for c in checks if "MISSED" in c]
        result = Result(SUITE, name, figures, notes)
        self.results.insert(len(self.results) if at is None else at, result)
        print(f"  {name}: {show(figures)}" + (f"\n    {notes}" if notes else ""), flush=True)

    async def section(self, title: str, limit: float, body: Callable[[], Awaitable[None]]) -> None:
        print(f"redis: {title}", flush=True)
        started = time.perf_counter()
        try:
            with anyio.fail_after(limit):
                await body()
            print(f"redis: {title}: {time.perf_counter() - started:.0f}s", flush=True)
        except Exception as exc:
            traceback.print_exc()
            if isinstance(exc, TimeoutError):
                text = f"stalled: not done within {limit:g}s"
            else:
                text = f"{type(exc).__name__}: {exc}"
            self.results.append(Result(SUITE, title, {}, text, failed=True))
            print(f"  FAILED: {text}", flush=True)

    # -- 1-4. floors, uncontended and contended, every contender interleaved -----------

    async def measure_uncontended(self) -> None:
        name = f"{self.base}:uncontended"
        async with contextlib.AsyncExitStack() as stack:
            floor_conn = aioredis.Redis.from_url(self.url, single_connection_client=True)
            stack.push_async_callback(floor_conn.aclose)
            info = await floor_conn.info("server")
            _versions["redis"] = str(info["redis_version"])
            sha = await floor_conn.script_load("return 1")

            async def floor_cycle() -> None:
                await floor_conn.evalsha(sha, 0)
                await floor_conn.evalsha(sha, 0)

            bare = await stack.enter_async_context(_bare(self.url))

            async def bare_cycle() -> None:
                await bare.call(b"EVALSHA", sha, b"0")
                await bare.call(b"EVALSHA", sha, b"0")

            locks = await stack.enter_async_context(lockkit.connect(self.url))
            lock = locks.lock(name, ttl=30)

            async def lockkit_cycle() -> None:
                await lock.acquire()
                await lock.release()

            peers = await stack.enter_async_context(_Peers(self.url))
            contenders = [
                Contender("floor: 2x EVALSHA, redis.asyncio", "floor", cycles(floor_cycle)),
                Contender("floor: 2x EVALSHA, asyncio + hiredis", "floor", cycles(bare_cycle)),
                Contender("lockkit", "lockkit", cycles(lockkit_cycle)),
                *peers.uncontended(name),
            ]
            found = await interleave(
                SUITE, "uncontended", contenders, self.duration, "cycles_per_s"
            )
        self.results += found
        for r in found:
            if r.contender.startswith("floor: 2x EVALSHA, redis.asyncio") and not r.failed:
                self.floor = r.figures["cycles_per_s"]

    async def measure_contended(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(lockkit.connect(self.url)) for _ in "ab"]
            unfair_url = f"{self.url}{'&' if '?' in self.url else '?'}fair=false"
            unfair = [await stack.enter_async_context(lockkit.connect(unfair_url)) for _ in "ab"]
            peers = await stack.enter_async_context(_Peers(self.url))
            for tasks in TASKS:
                name = f"{self.base}:contended:{tasks}"
                fair_locks = [c.lock(name, ttl=30, timeout=60) for c in clients]
                unfair_locks = [c.lock(f"{name}:unfair", ttl=30, timeout=60) for c in unfair]
                contenders = [
                    Contender(
                        "lockkit",
                        "lockkit",
                        contention(tasks, lambda i, m=fair_locks: m[i % 2]),
                    ),
                    Contender(
                        "lockkit fair=false",
                        "lockkit",
                        contention(tasks, lambda i, m=unfair_locks: m[i % 2]),
                    ),
                    *peers.contended(name, tasks),
                ]
                found = await interleave(
                    SUITE, f"contended {tasks}", contenders, self.duration, "acquisitions_per_s"
                )
                for r in found:
                    if r.contender == "lockkit" and not r.failed:
                        self.check_contended(r, tasks)
                self.results += found

    def check_contended(self, r: Result, tasks: int) -> None:
        f = r.figures
        checks = [
            check("handoff_share", f["handoff_share"], 0.95),
            check("handoff_p50_ms", f["handoff_p50_ms"], 0.3, at_most=True),
            check("handoff_p99_ms", f["handoff_p99_ms"], 0.6, at_most=True),
            check("FIFO: max_turns_waited", f["max_turns_waited"], tasks - 1, at_most=True),
        ]
        r.notes = "; ".join(checks)
        self.missed += [f"{r.name}: {c}" for c in checks if "MISSED" in c]

    # -- 5. 10,000 waiters: the interleaved figures -------------------------------------

    async def measure_waiters(self) -> None:
        count = crowd(WAITERS)
        async with lockkit.connect(self.url) as client:
            rounds = 0

            async def lockkit_waiters(_duration: float) -> Figures:
                nonlocal rounds
                rounds += 1
                name = f"{self.base}:drain:{rounds}"
                holder = client.lock(name, ttl=60)
                waiting = client.lock(name, ttl=60, timeout=None)

                async def queued() -> int:
                    return (await client.inspect(name)).waiters

                return await many_waiters(
                    holder.acquire, holder.release, lambda: waiting, queued, count, limit=240
                )

            why = (
                "not run: polling locks would send every waiter's retries (10,000 tasks x "
                "10 polls/s) to the server; they are compared at 512 tasks"
            )
            self.results += await interleave(
                SUITE,
                f"{WAITERS:,} waiters on one lock",
                [
                    Contender("lockkit", "lockkit", lockkit_waiters),
                ],
                self.duration,
                "handoffs_per_s",
                repeats=1,
            )
            self.results.append(
                Result(SUITE, f"{WAITERS:,} waiters on one lock: the polling peers", {}, why)
            )

    # -- 5. 10,000 waiters on one lock -----------------------------------------------

    async def measure_many_waiters(self, waiters: int = 10_000) -> None:
        name = f"{self.base}:waiters"
        counted, monitored = 2_000, 500
        stops = (counted, counted + monitored)
        reached = {k: anyio.Event() for k in stops}
        resume = {k: anyio.Event() for k in stops}
        latencies: list[float] = []
        last_release = 0.0
        handed = 0
        conn = aioredis.Redis.from_url(self.url, single_connection_client=True)
        try:
            async with lockkit.connect(self.url) as client:
                backend = client.backend
                assert isinstance(backend, RedisBackend)
                lock = client.lock(name, ttl=30, timeout=None)

                async def waiter() -> None:
                    nonlocal handed, last_release
                    async with lock:
                        latencies.append(time.perf_counter() - last_release)
                        handed += 1
                        if handed in reached:
                            reached[handed].set()
                            await resume[handed].wait()
                        last_release = time.perf_counter()

                await lock.acquire()
                queued_at = time.perf_counter()
                fill_calls_before = _requests(backend)
                async with anyio.create_task_group() as tg:
                    for _ in range(waiters):
                        tg.start_soon(waiter)
                    queued = subscriptions = 0
                    give_up = time.perf_counter() + 90
                    while time.perf_counter() < give_up:
                        queued = (await client.inspect(name)).waiters
                        if queued >= waiters:
                            break
                        await anyio.sleep(0.1)
                    fill_s = time.perf_counter() - queued_at
                    # the subscription is made by the first waiter that had to wait; let
                    # it settle before counting
                    give_up = time.perf_counter() + 10
                    while True:
                        channels = [
                            _text(c) for c in await conn.pubsub_channels(f"{backend.prefix}*")
                        ]
                        counts = await conn.pubsub_numsub(*channels) if channels else []
                        subscriptions = sum(int(n) for _, n in counts)
                        if subscriptions >= 1 or time.perf_counter() > give_up:
                            break
                        await anyio.sleep(0.05)
                    try:
                        pubsub_conns = float(
                            sum(1 for c in await conn.client_list() if int(c.get("sub") or 0))
                        )
                    except redis.RedisError:  # CLIENT LIST may be forbidden
                        pubsub_conns = math.nan
                    fill_calls = _requests(backend)
                    fill_calls.subtract(fill_calls_before)

                    # window 1: INFO commandstats before/after; nothing else attached
                    stats_before = await _commandstats(conn)
                    calls_before = _requests(backend)
                    started = last_release = time.perf_counter()
                    await lock.release()
                    await reached[counted].wait()
                    elapsed = time.perf_counter() - started
                    stats_after = await _commandstats(conn)
                    calls = _requests(backend)
                    calls.subtract(calls_before)
                    delta = stats_after.copy()
                    delta.subtract(stats_before)
                    mine = delta.pop("cmdstat_info", 0)
                    server_total = sum(delta.values())
                    evalsha = delta.get("cmdstat_evalsha", 0) + delta.get("cmdstat_eval", 0)
                    window_latencies = latencies[:counted]

                    # window 2: the same, with MONITOR telling client commands from
                    # commands run inside scripts
                    monitor: _Monitor | None = None
                    try:
                        attached = _Monitor(self.url)
                        await attached.start()
                        monitor = attached
                    except RuntimeError as exc:  # MONITOR may be forbidden
                        print(f"    {exc}; no client/script split", flush=True)
                    resume[counted].set()
                    await reached[counted + monitored].wait()
                    if monitor is not None:
                        await monitor.stop(conn)

                    cancel_started = time.perf_counter()
                    tg.cancel_scope.cancel()
                cancel_s = time.perf_counter() - cancel_started
                lock_keys = backend.keys(name)
                keys = [lock_keys.owner, lock_keys.fence, lock_keys.queue, lock_keys.liveness]
                left = [k for k in keys if not k.endswith(":f") and await conn.exists(k)]
                left_detail = [
                    f"{k} ({_text(await conn.type(k))}, pttl {await conn.pttl(k)} ms)" for k in left
                ]
                gone_after = 0.0
                while left and gone_after < 8.0:
                    await anyio.sleep(0.25)
                    gone_after += 0.25
                    left = [k for k in left if await conn.exists(k)]
                fences = sum([1 for k in keys if k.endswith(":f") and await conn.exists(k)])
                lock_lingers = await client.inspect(name)
        finally:
            await conn.aclose()

        client_cmds = monitor.total("client") if monitor is not None else math.nan
        in_scripts = monitor.total("script") if monitor is not None else math.nan
        figures = {
            "waiters": float(waiters),
            "queued_seen": float(queued),
            "queue_fill_s": fill_s,
            "fill_scripts_per_waiter": sum(n for kind, n in fill_calls.items() if kind != "inspect")
            / waiters,
            "pubsub_channels": float(len(channels)),
            "pubsub_subscriptions": float(subscriptions),
            "pubsub_connections": pubsub_conns,
            "handoffs_per_s": counted / elapsed,
            "handoff_p50_ms": percentile(window_latencies, 50) * 1000,
            "handoff_p99_ms": percentile(window_latencies, 99) * 1000,
            "evalsha_per_handoff": evalsha / counted,
            "lockkit_scripts_per_handoff": sum(calls.values()) / counted,
            "client_commands_per_handoff": client_cmds / monitored,
            "in_script_commands_per_handoff": in_scripts / monitored,
            "server_commands_per_handoff": server_total / counted,
            "cancel_rest_s": cancel_s,
            "keys_left": float(len(left_detail)),
            "keys_left_after_wait": float(len(left)),
            "fence_keys_kept": float(fences),
        }
        checks = [
            check("subscriptions", float(subscriptions), 1, exactly=True),
            check("client commands per handoff", client_cmds / monitored, 3, at_most=True)
            if monitor is not None
            else check("EVALSHA per handoff", evalsha / counted, 3, at_most=True),
            check("keys left after cancel", float(len(left_detail)), 0, at_most=True),
        ]
        self.add(f"lockkit {waiters:,} waiters of one client on one lock", figures, checks)
        detail = (
            f"window 1 ({counted} handoffs): lockkit sent "
            + " ".join(f"{k}={v}" for k, v in sorted(calls.items()) if v)
            + f"; server ran {server_total} commands ({mine} INFO of ours left out); "
        )
        if monitor is not None:
            detail += (
                f"window 2 ({monitored} handoffs, MONITOR): client {monitor.by_verb('client')}; "
                f"in scripts {monitor.by_verb('script')}"
            )
        if left_detail:
            detail += (
                "; left right after cancelling: "
                + ", ".join(left_detail)
                + (
                    f"; still there after {gone_after:g}s"
                    if left
                    else f"; gone {gone_after:g}s later"
                )
            )
        if not lock_lingers.idle:
            detail += f"; inspect() after cancelling: {lock_lingers}"
        print(f"    {detail}", flush=True)
        self.results[-1].notes += "; " + detail

    # -- 6. 10,000 locks held by one client ------------------------------------------

    async def measure_many_held(self, count: int = HELD, ttl: float = 3.0) -> None:
        """Two rounds of ``count`` locks: one under ``tracemalloc`` for the memory per
        held lock (what releasing them all frees; tracing slows acquisition several
        times, which spreads the renewals out), then one untraced for the acquisition
        rate and the renewal scripts."""
        workers = 50
        conn = aioredis.Redis.from_url(self.url, single_connection_client=True)
        try:
            async with lockkit.connect(self.url) as client:
                backend = client.backend
                assert isinstance(backend, RedisBackend)
                watchdog = client.session.watchdog
                assert watchdog is not None

                async def take(prefix: str) -> list[lockkit.Lock]:
                    taken: list[lockkit.Lock] = []

                    async def part(indices: range) -> None:
                        for i in indices:
                            lock = client.lock(f"{prefix}{i}", ttl=ttl, timeout=5)
                            await lock.acquire()
                            taken.append(lock)

                    async with anyio.create_task_group() as tg:
                        for w in range(workers):
                            tg.start_soon(part, range(w, count, workers))
                    return taken

                async def give_back(locks: list[lockkit.Lock]) -> int:
                    failed = 0

                    async def part(some: list[lockkit.Lock]) -> None:
                        nonlocal failed
                        for lock in some:
                            try:
                                await lock.release()
                            except lockkit.LockError:
                                failed += 1

                    async with anyio.create_task_group() as tg:
                        for w in range(workers):
                            tg.start_soon(part, locks[w::workers])
                    return failed

                # round 1: memory. What a held lock costs is what giving it back frees:
                # held (the lock objects included) against released (and dropped), so
                # buffers and caches that grew during the burst and stay are not counted
                gc.collect()
                tracemalloc.start()
                try:
                    locks = await take(f"{self.base}:held:m")
                    await anyio.sleep(0.1)  # writes drained
                    gc.collect()
                    snap_held = tracemalloc.take_snapshot()
                    failed = await give_back(locks)
                    del locks
                    await anyio.sleep(0.1)
                    gc.collect()
                    snap_released = tracemalloc.take_snapshot()
                finally:
                    tracemalloc.stop()
                stats = snap_held.compare_to(snap_released, "filename")
                grown = sum(s.size_diff for s in stats)
                top = sorted(stats, key=lambda s: -s.size_diff)[:4]
                where = ", ".join(
                    f"{Path(str(s.traceback[0].filename)).name} {s.size_diff / count:,.0f} B"
                    for s in top
                )
                del snap_held, snap_released, stats, top

                # round 2: acquisition rate and renewals
                started = time.perf_counter()
                locks = await take(f"{self.base}:held:r")
                acquire_s = time.perf_counter() - started
                extend_before = backend.statistics().requests.get("extend", 0)
                batches_before = watchdog.renewal_calls
                window_start = time.perf_counter()
                await anyio.sleep(max(3.0, self.duration))
                window = time.perf_counter() - window_start
                extend_scripts = backend.statistics().requests.get("extend", 0) - extend_before
                batches = watchdog.renewal_calls - batches_before
                still_held = client.held_count
                started = time.perf_counter()
                failed += await give_back(locks)
                release_s = time.perf_counter() - started
            keys = await _scan(conn, f"{backend.prefix}{{{self.base}:held:*")
        finally:
            await conn.aclose()
        left, fences = _split_fences(keys)
        periods = window / (ttl / 3)
        expected = math.ceil(count / BATCH)
        figures = {
            "locks": float(count),
            "bytes_per_held_lock": grown / count,
            "acquisitions_per_s": count / acquire_s,
            "releases_per_s": count / release_s,
            "renewal_period_s": ttl / 3,
            "extend_scripts_per_period": extend_scripts / periods,
            "renewal_requests_per_s": extend_scripts / window,
            "expected_scripts_per_period": float(expected),
            "watchdog_batches_per_period": batches / periods,
            "held_after_window": float(still_held),
            "release_errors": float(failed),
            "keys_left": float(len(left)),
            "fence_keys_kept": float(len(fences)),
        }
        checks = [
            check("bytes per held lock", grown / count, 1536, at_most=True),
            check("extend scripts per period", extend_scripts / periods, expected, at_most=True),
            check("leases kept", float(still_held), count),
            check("release errors", float(failed), 0, at_most=True),
            check("keys left after release", float(len(left)), 0, at_most=True),
        ]
        self.add(f"lockkit {count:,} locks held by one client (ttl {ttl:g}s)", figures, checks)
        detail = f"freed per lock on release, by file: {where}"
        if left:
            detail += f"; left: {', '.join(left[:5])}{' ...' if len(left) > 5 else ''}"
        print(f"    {detail}", flush=True)
        self.results[-1].notes += "; " + detail

    # -- everything ----------------------------------------------------------------------

    async def leftovers(self) -> None:
        """Keys the suite left. A waiting client's liveness entry outlives its last
        waiter by at most two queue leases (it expires then): such keys, still expiring,
        are counted apart, not as left."""
        conn = aioredis.Redis.from_url(self.url, single_connection_client=True)
        try:
            keys = await _scan(conn, f"lockkit:{{{self.base}*")
            found, fences = _split_fences(keys)
            ttls = [await conn.pttl(k) for k in found]
        finally:
            await conn.aclose()
        horizon = 2 * QUEUE_LEASE * 1000
        expiring = [
            k for k, t in zip(found, ttls, strict=True) if k.endswith(":l") and t <= horizon
        ]
        left = [k for k in found if k not in expiring]
        self.add(
            "keys left by the whole suite",
            {
                "keys_left": float(len(left)),
                "liveness_keys_expiring": float(len(expiring)),
                "fence_keys_kept": float(len(fences)),
            },
            [check("keys left", float(len(left)), 0, at_most=True)]
            + ([f"left: {', '.join(left[:10])}"] if left else []),
        )


def _why_missing(module: str) -> str:
    return f"{module}: " + optional(module)[1]


class _Bare(asyncio.Protocol):
    """The least a client can do: RESP over an asyncio transport, parsed by hiredis,
    one request at a time."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            self.pending.popleft().set_result(reply)

    async def call(self, *args: bytes | str) -> Any:
        assert self.transport is not None
        future = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        self.transport.write(hiredis.pack_command(args))
        return await future


@contextlib.asynccontextmanager
async def _bare(url: str) -> AsyncIterator[_Bare]:
    parsed = lockkit.parse_url(url)
    host, port = parsed.hosts[0]
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(_Bare, host, port or 6379)
    try:
        yield protocol
    finally:
        transport.close()


def _quiet_mithril() -> None:
    """mithril-locks logs every acquisition and release at info level through
    structlog; its users would turn that down, and so does the benchmark."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


class _Peers:
    """The other Redis lock libraries on one server, each on connections of its own;
    ``uncontended`` and ``contended`` give their contenders (a library that does not
    import is a contender that cannot run, with the reason)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> _Peers:
        await self.stack.__aenter__()
        # room for a connection per task or thread at 512 (redis-py's default is 100)
        self.aconn = aioredis.Redis.from_url(self.url, max_connections=2048)
        self.stack.push_async_callback(self.aconn.aclose)
        self.conn = redis.Redis.from_url(self.url, max_connections=2048)
        self.stack.callback(self.conn.close)
        self.redis_lock, _ = optional("redis_lock")
        self.pottery, _ = optional("pottery")
        self.aioredlock, _ = optional("aioredlock")
        self.mithril_aio, _ = optional("mithril.aio")
        self.mithril_backends, _ = optional("mithril.backends.aio._redis")
        self.manager: Any = None
        if self.aioredlock is not None:
            self.manager = self.aioredlock.Aioredlock([self.url])
            self.stack.push_async_callback(self.manager.destroy)
        self.mithril_backend: Any = None
        if self.mithril_aio is not None and self.mithril_backends is not None:
            _quiet_mithril()
            self.mithril_backend = self.mithril_backends.AsyncRedisBackend(self.aconn)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stack.__aexit__(*exc)

    # -- the locks, one per task or thread -------------------------------------------

    def redis_py(self, name: str, sleep: float) -> Any:
        return self.aconn.lock(f"{name}:rp{sleep:g}", timeout=30, sleep=sleep, blocking_timeout=60)

    def redis_py_sync(self, name: str) -> SyncLock:
        lock = self.conn.lock(f"{name}:rps", timeout=30, blocking_timeout=1.0)
        return lock.acquire, lock.release

    def python_redis_lock(self, name: str) -> SyncLock:
        lock = self.redis_lock.Lock(self.conn, f"{name}:prl", expire=30)
        return (lambda: lock.acquire(timeout=1)), lock.release

    def pottery_sync(self, name: str) -> SyncLock:
        lock = self.pottery.Redlock(key=f"{name}:pot", masters={self.conn}, auto_release_time=30)
        return (lambda: lock.acquire(timeout=1)), lock.release

    def pottery_async(self, name: str) -> Any:
        lock = self.pottery.AIORedlock(
            key=f"{name}:apot", masters={self.aconn}, auto_release_time=30
        )

        async def acquire() -> None:
            if not await lock.acquire(timeout=60):
                raise TimeoutError("pottery AIORedlock did not acquire in 60 s")

        async def release(_: object) -> None:
            await lock.release()

        return Turns(acquire, release)

    def aioredlock_lock(self, name: str) -> Any:
        lock_error = self.aioredlock.LockError

        async def acquire() -> Any:
            while True:  # gives up after its 3 retries; a waiter asks again
                try:
                    return await self.manager.lock(f"{name}:arl", lock_timeout=30)
                except lock_error:
                    continue

        async def release(held: Any) -> None:
            await self.manager.unlock(held)

        return Turns(acquire, release)

    def mithril_lock(self, name: str) -> Any:
        make = self.mithril_aio.AsyncLock
        backend = self.mithril_backend

        async def acquire() -> Any:
            lock = make(f"{name}:mith", backend=backend, ttl=30, timeout=60)
            await lock.acquire()
            return lock

        async def release(lock: Any) -> None:
            await lock.release()

        return Turns(acquire, release)

    # -- contenders ----------------------------------------------------------------------

    def _table(self) -> list[tuple[str, Any, str, Callable[[str], Any], bool]]:
        """(contender, module or None, module name, lock for a name, threaded)."""
        return [
            (
                "redis-py asyncio Lock (sleep 0.1)",
                redis,
                "redis",
                lambda n: self.redis_py(n, 0.1),
                False,
            ),
            (
                "redis-py asyncio Lock (sleep 0.001)",
                redis,
                "redis",
                lambda n: self.redis_py(n, 0.001),
                False,
            ),
            ("redis-py Lock (threads)", redis, "redis", self.redis_py_sync, True),
            (
                "python-redis-lock (threads)",
                self.redis_lock,
                "redis_lock",
                self.python_redis_lock,
                True,
            ),
            (
                "pottery Redlock, 1 master (threads)",
                self.pottery,
                "pottery",
                self.pottery_sync,
                True,
            ),
            ("pottery AIORedlock, 1 master", self.pottery, "pottery", self.pottery_async, False),
            ("aioredlock, 1 master", self.aioredlock, "aioredlock", self.aioredlock_lock, False),
            (
                "mithril-locks AsyncLock",
                self.mithril_backend,
                "mithril.aio",
                self.mithril_lock,
                False,
            ),
        ]

    def uncontended(self, name: str) -> list[Contender]:
        out = []
        for label, module, module_name, make, threaded in self._table():
            if module is None:
                out.append(Contender(label, "peer", None, _why_missing(module_name)))
            elif threaded:
                out.append(Contender(label, "peer", thread_cycles(lambda m=make: m(name))))
            else:
                lock = make(name)

                async def cycle(lock: Any = lock) -> None:
                    async with lock:
                        pass

                out.append(Contender(label, "peer", cycles(cycle)))
        return out

    def contended(self, name: str, tasks: int) -> list[Contender]:
        out = []
        for label, module, module_name, make, threaded in self._table():
            if module is None:
                out.append(Contender(label, "peer", None, _why_missing(module_name)))
            elif threaded:

                async def run(duration: float, make: Any = make) -> Figures:
                    return await threads_contended(lambda _i: make(name), tasks, duration)

                out.append(Contender(label, "peer", run))
            else:
                out.append(Contender(label, "peer", contention(tasks, lambda _i, m=make: m(name))))
        return out


async def run(duration: float) -> list[Result]:
    async with _redis_url() as url:
        suite = _Suite(url, duration)
        await suite.section("floor and uncontended", 300, suite.measure_uncontended)
        await suite.section("contended", 900, suite.measure_contended)
        if wanted("10,000 waiters"):
            await suite.section("10,000 waiters, drained", 300, suite.measure_waiters)
        if wanted("10,000 waiters") and not harness.SMOKE:
            await suite.section(
                "10,000 waiters, requests per handoff", 240, suite.measure_many_waiters
            )
        if wanted("10,000 locks held"):
            await suite.section(
                "10,000 locks held", 240, lambda: suite.measure_many_held(crowd(HELD))
            )
        await suite.section("leftovers", 30, suite.leftovers)
        if suite.missed:
            print(f"redis: {len(suite.missed)} target(s) missed:")
            for line in suite.missed:
                print(f"  - {line}")
        else:
            print("redis: every target met")
        return suite.results
