"""redis:// against the protocol floor and other Redis lock libraries, on one server.

The suite starts its own ``redis-server`` in a temporary directory (or uses
``LOCKKIT_BENCH_REDIS_URL``) and measures, in this order:

1. the floor: two ``EVALSHA`` round trips of ``return 1`` on one redis-py asyncio
   connection, back to back (one "cycle": the least an acquire + release can cost);
2. uncontended acquire + release cycles of lockkit and of the peers (redis-py's asyncio
   ``Lock``, python-redis-lock in a worker thread, pottery's ``AIORedlock`` on one
   master);
3. 8 and 64 tasks on one lock: lockkit over two clients, redis-py's ``Lock``, and
   python-redis-lock in 8 threads;
4. 10,000 waiters of one client queued on one lock: Redis commands and pub/sub
   subscriptions per handoff, and what is left after cancelling them;
5. 10,000 locks held by one client: renewal scripts per renewal period and memory per
   held lock.

Peers that are not installed are skipped with a message; ``benchmarks/requirements.txt``
lists them.

The server comes from the test harness (``tests.servers.redis.RedisServer``, imported only
when ``LOCKKIT_BENCH_REDIS_URL`` is not set), so benchmarks and tests start Redis the same
way; run from a source checkout.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import math
import os
import secrets
import shutil
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
import redis
import redis.asyncio as aioredis

import lockkit
from lockkit.backends.redis import BATCH, RedisBackend

from .harness import Result, Tally, check, contended, contended_locks, percentile, rate, show

SUITE = "redis"

#: Filled while the suite runs; read by ``python -m benchmarks`` for the JSON.
_versions: dict[str, str] = {}


def server_versions() -> dict[str, str]:
    return dict(_versions)


def _optional(module: str) -> Any | None:
    """Import a peer library, or say it is missing and return None."""
    try:
        return importlib.import_module(module)
    except ImportError:
        print(
            f"redis: {module} is not installed; skipping it "
            "(pip install -r benchmarks/requirements.txt)"
        )
        return None


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
        try:
            with anyio.fail_after(limit):
                await body()
        except Exception as exc:
            traceback.print_exc()
            if isinstance(exc, TimeoutError):
                text = f"stalled: not done within {limit:g}s"
            else:
                text = f"{type(exc).__name__}: {exc}"
            self.results.append(Result(SUITE, title, {}, text, failed=True))
            print(f"  FAILED: {text}", flush=True)

    # -- 1-3. floor and uncontended cycles ---------------------------------------------

    async def measure_uncontended(self, rounds: int = 3) -> None:
        """The floor, lockkit and the peers take turns, ``rounds`` times for half the
        duration each; each keeps its best round (other load on the machine only ever
        slows a round down), and the ratios compare those."""
        name = f"{self.base}:uncontended"
        runners: dict[str, Callable[[float], Awaitable[float]]] = {}
        async with contextlib.AsyncExitStack() as stack:
            floor_conn = aioredis.Redis.from_url(self.url, single_connection_client=True)
            stack.push_async_callback(floor_conn.aclose)
            info = await floor_conn.info("server")
            _versions["redis"] = str(info["redis_version"])
            sha = await floor_conn.script_load("return 1")

            async def floor_cycle() -> None:
                await floor_conn.evalsha(sha, 0)
                await floor_conn.evalsha(sha, 0)

            runners["floor"] = lambda d: rate(floor_cycle, d)

            locks = await stack.enter_async_context(lockkit.connect(self.url))
            backend = locks.backend
            assert isinstance(backend, RedisBackend)
            lock = locks.lock(name, ttl=30)
            lockkit_cycles = 0

            async def lockkit_cycle() -> None:
                nonlocal lockkit_cycles
                await lock.acquire()
                await lock.release()
                lockkit_cycles += 1

            runners["lockkit"] = lambda d: rate(lockkit_cycle, d)

            peer_conn = aioredis.Redis.from_url(self.url)
            stack.push_async_callback(peer_conn.aclose)
            peer = peer_conn.lock(f"{name}:redis-py", timeout=30)

            async def redis_py_cycle() -> None:
                await peer.acquire()
                await peer.release()

            runners["redis_py_lock"] = lambda d: rate(redis_py_cycle, d)

            redis_lock = _optional("redis_lock")
            if redis_lock is not None:

                async def python_redis_lock(d: float) -> float:
                    return await anyio.to_thread.run_sync(
                        _threaded_uncontended, redis_lock, self.url, f"{name}:prl", d
                    )

                runners["python_redis_lock"] = python_redis_lock

            pottery = _optional("pottery")
            if pottery is not None:
                pottery_conn = aioredis.Redis.from_url(self.url)
                stack.push_async_callback(pottery_conn.aclose)
                redlock = pottery.AIORedlock(
                    key=f"{name}:pottery", masters={pottery_conn}, auto_release_time=30
                )

                async def pottery_cycle() -> None:
                    await redlock.acquire()
                    await redlock.release()

                runners["pottery_aioredlock"] = lambda d: rate(pottery_cycle, d)

            calls_before = backend.statistics().total_requests
            best: dict[str, list[float]] = {key: [] for key in runners}
            for _ in range(rounds):
                for key, runner in runners.items():
                    best[key].append(await runner(self.duration / 2))
            scripts = (backend.statistics().total_requests - calls_before) / max(1, lockkit_cycles)

        self.uncontended = {key: max(values) for key, values in best.items()}
        self.floor = floor = self.uncontended.pop("floor")
        spread = {key: (min(v) / max(v)) for key, v in best.items()}
        self.add(
            "floor: 2x EVALSHA 'return 1', one redis-py connection",
            {"cycles_per_s": floor, "worst_round_over_best": spread["floor"]},
            [f"best of {rounds} rounds of {self.duration / 2:g}s, interleaved with the others"],
        )
        mine = self.uncontended["lockkit"]
        figures = {
            "cycles_per_s": mine,
            "x_floor": mine / floor,
            "scripts_per_cycle": scripts,
            "worst_round_over_best": spread["lockkit"],
        }
        for key, value in self.uncontended.items():
            if key != "lockkit":
                figures[f"x_{key}"] = mine / value
        self.add(
            "lockkit uncontended acquire+release",
            figures,
            [check("x_floor", mine / floor, 0.9), check("stretch x_floor", mine / floor, 1.5)],
        )
        titles = {
            "redis_py_lock": "redis-py asyncio Lock uncontended (SET NX + EVALSHA)",
            "python_redis_lock": "python-redis-lock uncontended, sync in a thread",
            "pottery_aioredlock": "pottery AIORedlock uncontended, one master",
        }
        for key, value in self.uncontended.items():
            if key != "lockkit":
                self.add(
                    titles[key],
                    {
                        "cycles_per_s": value,
                        "x_floor": value / floor,
                        "x_lockkit": value / mine,
                        "worst_round_over_best": spread[key],
                    },
                )

    # -- 4. contended ------------------------------------------------------------------

    async def measure_contended(self) -> None:
        for tasks in (8, 64):
            name = f"{self.base}:contended:{tasks}"
            async with lockkit.connect(self.url) as a, lockkit.connect(self.url) as b:
                backends = [a.backend, b.backend]
                before = sum(x.statistics().total_requests for x in backends)
                figures = await contended([a, b], name, tasks, self.duration)
                after = sum(x.statistics().total_requests for x in backends)
            figures["scripts_per_acquisition"] = (after - before) / max(1, figures["acquisitions"])
            figures["x_floor"] = figures["acquisitions_per_s"] / self.floor
            self.contended[("lockkit", tasks)] = figures["acquisitions_per_s"]
            self.lockkit_contended[tasks] = figures
        first = len(self.results)  # lockkit's rows go first, once the peers are known

        conn = aioredis.Redis.from_url(self.url)
        try:
            for tasks in (8, 64):
                name = f"{self.base}:contended:{tasks}:redis-py"

                def make_lock(_i: int, name: str = name) -> Any:
                    return conn.lock(name, timeout=30, blocking_timeout=60)

                figures = await contended_locks(make_lock, tasks, self.duration)
                figures["x_floor"] = figures["acquisitions_per_s"] / self.floor
                self.contended[("redis_py_lock", tasks)] = figures["acquisitions_per_s"]
                self.add(f"redis-py asyncio Lock contended, {tasks} tasks (sleep 0.1)", figures)
        finally:
            await conn.aclose()

        redis_lock = _optional("redis_lock")
        if redis_lock is not None:
            threads = 8
            figures = await _threaded_contended(
                redis_lock, self.url, f"{self.base}:contended:prl", threads, self.duration
            )
            figures["x_floor"] = figures["acquisitions_per_s"] / self.floor
            self.contended[("python_redis_lock", threads)] = figures["acquisitions_per_s"]
            self.add(f"python-redis-lock contended, {threads} threads (BLPOP)", figures)

        for row, (tasks, figures) in enumerate(self.lockkit_contended.items()):
            mine = figures["acquisitions_per_s"]
            for (peer, n), value in self.contended.items():
                if peer != "lockkit" and n == tasks:
                    figures[f"x_{peer}"] = mine / value
            self.add(
                f"lockkit contended, {tasks} tasks over 2 clients",
                figures,
                [
                    check("acquisitions_per_s", mine, 2500),
                    check("handoff_share", figures["handoff_share"], 0.95),
                    check("handoff_p50_ms", figures["handoff_p50_ms"], 0.3, at_most=True),
                    check("handoff_p99_ms", figures["handoff_p99_ms"], 1.0, at_most=True),
                    check(
                        "max_wait_over_mean_cycle",
                        figures["max_wait_over_mean_cycle"],
                        64,
                        at_most=True,
                    ),
                    check(
                        "FIFO: max_turns_waited",
                        figures["max_turns_waited"],
                        tasks - 1,
                        at_most=True,
                    ),
                ],
                at=first + row,
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

    async def measure_many_held(self, count: int = 10_000, ttl: float = 3.0) -> None:
        """Two rounds of ``count`` locks: one under ``tracemalloc`` for the memory per
        held lock (tracing slows acquisition several times, which spreads the renewals
        out), then one untraced for the acquisition rate and the renewal scripts."""
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

                # round 1: memory
                gc.collect()
                tracemalloc.start()
                try:
                    snap_before = tracemalloc.take_snapshot()
                    locks = await take(f"{self.base}:held:m")
                    gc.collect()
                    snap_after = tracemalloc.take_snapshot()
                finally:
                    tracemalloc.stop()
                stats = snap_after.compare_to(snap_before, "filename")
                grown = sum(s.size_diff for s in stats)
                top = sorted(stats, key=lambda s: -s.size_diff)[:4]
                where = ", ".join(
                    f"{Path(str(s.traceback[0].filename)).name} {s.size_diff / count:,.0f} B"
                    for s in top
                )
                del snap_before, snap_after, stats, top
                failed = await give_back(locks)
                del locks

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
            "expected_scripts_per_period": float(expected),
            "watchdog_batches_per_period": batches / periods,
            "held_after_window": float(still_held),
            "release_errors": float(failed),
            "keys_left": float(len(left)),
            "fence_keys_kept": float(len(fences)),
        }
        checks = [
            check("bytes per held lock", grown / count, 2048, at_most=True),
            check("extend scripts per period", extend_scripts / periods, expected, at_most=True),
            check("leases kept", float(still_held), count),
            check("release errors", float(failed), 0, at_most=True),
            check("keys left after release", float(len(left)), 0, at_most=True),
        ]
        self.add(f"lockkit {count:,} locks held by one client (ttl {ttl:g}s)", figures, checks)
        detail = f"growth per held lock by file: {where}"
        if left:
            detail += f"; left: {', '.join(left[:5])}{' ...' if len(left) > 5 else ''}"
        print(f"    {detail}", flush=True)
        self.results[-1].notes += "; " + detail

    # -- everything ----------------------------------------------------------------------

    async def leftovers(self) -> None:
        conn = aioredis.Redis.from_url(self.url, single_connection_client=True)
        try:
            keys = await _scan(conn, f"lockkit:{{{self.base}*")
        finally:
            await conn.aclose()
        left, fences = _split_fences(keys)
        self.add(
            "keys left by the whole suite",
            {"keys_left": float(len(left)), "fence_keys_kept": float(len(fences))},
            [check("keys left", float(len(left)), 0, at_most=True)]
            + ([f"left: {', '.join(left[:10])}"] if left else []),
        )


def _threaded_uncontended(redis_lock: Any, url: str, name: str, duration: float) -> float:
    """python-redis-lock acquire + release cycles per second, in the calling thread."""
    conn = redis.Redis.from_url(url)
    try:
        lock = redis_lock.Lock(conn, name, expire=30)
        for _ in range(50):
            lock.acquire()
            lock.release()
        count = 0
        start = time.perf_counter()
        deadline = start + duration
        while True:
            for _ in range(20):
                lock.acquire()
                lock.release()
            count += 20
            now = time.perf_counter()
            if now >= deadline:
                return count / (now - start)
    finally:
        conn.close()


async def _threaded_contended(
    redis_lock: Any, url: str, name: str, threads: int, duration: float
) -> dict[str, float]:
    """``threads`` threads take turns on one python-redis-lock lock; figures as
    :func:`benchmarks.harness.contended_locks`."""
    tally = Tally(threading.Lock())
    conn = redis.Redis.from_url(url)
    started = time.perf_counter()
    stop_at = started + duration

    def worker(i: int) -> None:
        lock = redis_lock.Lock(conn, name, expire=10)
        while time.perf_counter() < stop_at:
            asked = tally.ask()
            if not lock.acquire():
                tally.gave_up(asked)
                return
            tally.acquired(i, asked)
            tally.releasing()
            lock.release()

    try:
        async with anyio.create_task_group() as tg:
            for i in range(threads):
                tg.start_soon(anyio.to_thread.run_sync, worker, i)
    finally:
        conn.close()
    return tally.figures(time.perf_counter() - started)


async def run(duration: float) -> list[Result]:
    async with _redis_url() as url:
        suite = _Suite(url, duration)
        await suite.section("floor and uncontended", 120, suite.measure_uncontended)
        if math.isnan(suite.floor):
            return suite.results
        await suite.section("contended", 180, suite.measure_contended)
        await suite.section("10,000 waiters on one lock", 240, suite.measure_many_waiters)
        await suite.section("10,000 locks held", 240, suite.measure_many_held)
        await suite.section("leftovers", 30, suite.leftovers)
        if suite.missed:
            print(f"redis: {len(suite.missed)} target(s) missed:")
            for line in suite.missed:
                print(f"  - {line}")
        else:
            print("redis: every target met")
        return suite.results
