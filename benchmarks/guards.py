"""Guards: what a guarded write costs next to the same write without a guard.

One section per storage, each a function ``(duration) -> list[Result]`` listed in
:data:`SECTIONS`; a section starts (or finds) its own server and measures, interleaved
in one run (``ROUNDS`` rounds, each contender's median rate over them), the plain write
and the guarded one, reporting their ratio (time per guarded write / time per plain write,
so 1.0 means free). Goals are checked and reported, never enforced.

Redis (``LOCKKIT_BENCH_REDIS_URL``, or a fresh ``redis-server``):

1. one task, back to back: ``SET`` against :meth:`RedisGuard.write` (one ``EVALSHA``
   of the fence script), both over lockkit's own connection; ``SET`` against a script
   that only returns 1 (the floor of any script); the first pair over a redis-py client
   (``Redis.set`` against a guard made with ``from_client``);
2. 32 tasks sharing one connection (pipelined): the same pair, where the server's work
   (running the script) shows instead of the round trip;
3. read-modify-write: ``GET`` + ``SET`` against :meth:`RedisGuard.update` (a read and a
   versioned write: two round trips as well);
4. the server's own time per call (``INFO commandstats``, before and after): ``SET``
   against the guard's ``EVALSHA``, where no network or client is counted.

etcd (``LOCKKIT_BENCH_ETCD_URL``, or a fresh member), every contender over lockkit's
etcd driver on a channel of its own: ``Put`` against :meth:`EtcdGuard.write` (a
linearizable range of the resource's keys, then one ``Txn`` comparing the fence key's
revision and putting fence and value), one task and 32 tasks; and the guard against the
same two round trips without it (a linearizable range, then a ``Txn`` that only puts).

PostgreSQL (``LOCKKIT_BENCH_POSTGRES_URL``, or a fresh server from the test fixtures,
fsync off), every contender on one asyncpg pool of 16 connections:

1. ``UPDATE t SET value = $2 WHERE id = $1`` against :meth:`PostgresGuard.write` (one
   ``INSERT ... ON CONFLICT DO UPDATE ... WHERE <fence rule>``), one task and 16 tasks
   (each on its own row);
2. a transaction ``BEGIN; UPDATE; COMMIT`` with and without ``fence_in`` first (one more
   statement in it);
3. read-modify-write: ``SELECT`` + ``UPDATE`` against :meth:`PostgresGuard.update`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio as aioredis

from lockkit import FencingToken
from lockkit._core._url import parse_url
from lockkit._drivers.redis.resp import ConnectOptions, Script
from lockkit._drivers.redis.topology import Single
from lockkit.guards import RAW
from lockkit.guards.redis import RedisGuard

from .harness import Result, check, rate, show

SUITE = "guards"
ROUNDS = 5
#: The goal for a guarded write against the plain one (time ratio).
GOAL = 1.3
_versions: dict[str, str] = {}

Step = Callable[[], Awaitable[object]]


def server_versions() -> dict[str, str]:
    return dict(_versions)


def _add(results: list[Result], name: str, figures: dict[str, float], checks: list[str]) -> None:
    notes = "; ".join(checks)
    results.append(Result(SUITE, name, figures, notes))
    print(f"  {name}: {show(figures)}" + (f"\n    {notes}" if notes else ""), flush=True)


async def _concurrent_rate(step: Step, tasks: int, duration: float) -> float:
    """Calls of ``step`` per second, ``tasks`` tasks calling it back to back."""
    for _ in range(20):
        await step()
    count = 0
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await step()
            count += 1

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(tasks):
            tg.start_soon(worker)
    return count / (time.perf_counter() - started)


async def _interleaved(
    pairs: dict[str, tuple[Step, Step]], duration: float, tasks: int = 1
) -> dict[str, tuple[float, float]]:
    """For each pair (plain, guarded): the median rate of each over ``ROUNDS`` rounds,
    the contenders taking turns within every round (so a slow minute on a shared
    machine slows both, and one lucky round decides nothing)."""
    rates: dict[tuple[str, int], list[float]] = {}
    for _ in range(ROUNDS):
        for label, steps in pairs.items():
            for i, step in enumerate(steps):
                if tasks == 1:
                    measured = await rate(step, duration / ROUNDS)
                else:
                    measured = await _concurrent_rate(step, tasks, duration / ROUNDS)
                rates.setdefault((label, i), []).append(measured)
    median = statistics.median
    return {label: (median(rates[(label, 0)]), median(rates[(label, 1)])) for label in pairs}


def _report(
    results: list[Result],
    storage: str,
    found: dict[str, tuple[float, float]],
    what: tuple[str, str],
    goal: float | None = GOAL,
) -> None:
    """One result per pair: both rates and their time ratio (second / first), checked
    against ``goal`` if given."""
    for label, (plain, guarded) in found.items():
        ratio = plain / guarded
        _add(
            results,
            f"{storage} {label}",
            {f"{what[0]}_per_s": plain, f"{what[1]}_per_s": guarded, "ratio": ratio},
            [] if goal is None else [check("guarded/plain", ratio, goal, at_most=True)],
        )


#: The cheapest script: what any script costs over a plain command, whatever it does.
_NOOP = Script("noop", "return 1")

# -- Redis ------------------------------------------------------------------------------


async def redis_section(duration: float) -> list[Result]:
    from .redis import _redis_url  # the Redis suite's server starter

    results: list[Result] = []
    async with _redis_url() as url:
        parsed = parse_url(url)
        host, port = parsed.hosts[0]
        plain = Single(host, port or 6379).open(ConnectOptions())
        client = aioredis.Redis.from_url(url)
        try:
            info = await client.info("server")
            _versions["redis"] = str(info.get("redis_version"))
            before = await _commandstats(client)
            async with (
                RedisGuard.from_url(url, codec=RAW) as guard,
                RedisGuard.from_client(client, codec=RAW) as app_guard,
            ):
                results += await _redis_measure(plain, client, guard, app_guard, duration)
            after = await _commandstats(client)
            per_call = {
                verb: (after[verb][1] - before[verb][1]) / max(1, after[verb][0] - before[verb][0])
                for verb in ("set", "evalsha")
            }
            _add(
                results,
                "redis server time per call",
                {
                    "set_us": per_call["set"],
                    "guard_evalsha_us": per_call["evalsha"],
                    "ratio": per_call["evalsha"] / per_call["set"],
                },
                ["evalsha: every guard script of the run (write, update, read)"],
            )
        finally:
            await plain.aclose()
            await client.aclose()
    return results


async def _commandstats(client: aioredis.Redis) -> dict[str, tuple[int, float]]:
    """Calls and microseconds spent so far, by command."""
    stats = await client.info("commandstats")
    out: dict[str, tuple[int, float]] = {"set": (0, 0.0), "evalsha": (0, 0.0)}
    for name, entry in stats.items():
        verb = name.removeprefix("cmdstat_")
        out[verb] = (int(entry["calls"]), float(entry["usec"]))
    return out


async def _redis_measure(
    plain: Any,
    client: aioredis.Redis,
    guard: RedisGuard[bytes],
    app_guard: RedisGuard[bytes],
    duration: float,
) -> list[Result]:
    results: list[Result] = []
    value = b"x" * 64
    token = FencingToken(time.time_ns() // 1000, name="bench", backend="redis", owner="bench")
    key, resource = "bench:guards:plain", "bench:guards:guarded"
    app_key, app_resource = "bench:guards:app-plain", "bench:guards:app-guarded"

    async def set_plain() -> None:
        await plain.execute("SET", key, value)

    async def write_guarded() -> None:
        await guard.write(resource, value, token=token)

    async def noop_script() -> None:
        await plain.evalsha(_NOOP, (key,), (value,))

    async def set_app() -> None:
        await client.set(app_key, value)

    async def write_app() -> None:
        await app_guard.write(app_resource, value, token=token)

    print("guards: redis, one task, SET vs guarded write", flush=True)
    found = await _interleaved(
        {
            "write, 1 task, lockkit connection": (set_plain, write_guarded),
            "write, 1 task, redis-py client": (set_app, write_app),
            "floor, 1 task: SET vs a script doing nothing": (set_plain, noop_script),
        },
        duration,
    )
    label = "floor, 1 task: SET vs a script doing nothing"
    floor = {label: found.pop(label)}
    _report(results, "redis", found, ("set", "guarded"))
    _report(results, "redis", floor, ("set", "noop_script"), goal=None)
    print("guards: redis, 32 tasks on one connection, SET vs guarded write", flush=True)
    _report(
        results,
        "redis",
        await _interleaved(
            {"write, 32 tasks, lockkit connection": (set_plain, write_guarded)},
            duration,
            tasks=32,
        ),
        ("set", "guarded"),
    )

    counter = "bench:guards:counter"

    async def get_set() -> None:
        current = await plain.execute("GET", counter)
        await plain.execute("SET", counter, int(current or 0) + 1)

    def bump(current: bytes | None) -> bytes:
        return b"%d" % (int(current or 0) + 1)

    async def update_guarded() -> None:
        await guard.update("bench:guards:updated", bump, token=token)

    print("guards: redis, read-modify-write, GET+SET vs update()", flush=True)
    _report(
        results,
        "redis",
        await _interleaved({"read-modify-write, 1 task": (get_set, update_guarded)}, duration),
        ("get_set", "update"),
    )
    return results


# -- PostgreSQL ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _postgres_url() -> AsyncIterator[str]:
    """``LOCKKIT_BENCH_POSTGRES_URL``, or a fresh server stopped afterwards (the test
    fixtures' starter: fsync off, so the figures show the statements, not the disk)."""
    given = os.environ.get("LOCKKIT_BENCH_POSTGRES_URL")
    if given:
        yield given
        return
    from tests.servers.postgres import PostgresServer

    workdir = Path(tempfile.mkdtemp(prefix="lockkit-bench-postgres-"))
    server = PostgresServer("bench-postgres", workdir)
    try:
        await anyio.to_thread.run_sync(server.start)
        print(f"guards: started PostgreSQL on {server.hostport}", flush=True)
        yield server.url
    finally:
        await anyio.to_thread.run_sync(server.stop)
        shutil.rmtree(workdir, ignore_errors=True)


async def postgres_section(duration: float) -> list[Result]:
    import asyncpg

    from lockkit.guards.sql import PostgresGuard

    results: list[Result] = []
    async with _postgres_url() as url:
        pool = await asyncpg.create_pool(url, min_size=16, max_size=16)
        table = f"bench_plain_{os.getpid()}"
        try:
            _versions["postgres"] = str(await pool.fetchval("SHOW server_version"))
            await pool.execute(f"DROP TABLE IF EXISTS {table}")
            await pool.execute(f"CREATE TABLE {table} (id text PRIMARY KEY, value bytea)")
            async with PostgresGuard(pool, codec=RAW, table=f"{table}_guard") as guard:
                await guard.create_table()
                results += await _postgres_measure(pool, table, guard, duration)
            await pool.execute(f"DROP TABLE {table}, {table}_guard")
        finally:
            await pool.close()
    return results


async def _postgres_measure(pool: Any, table: str, guard: Any, duration: float) -> list[Result]:
    results: list[Result] = []
    value = b"x" * 64
    token = FencingToken(time.time_ns() // 1000, name="bench", backend="postgres", owner="b")
    rows = [f"bench:{i}" for i in range(16)]
    for row in rows:
        await pool.execute(f"INSERT INTO {table} VALUES ($1, $2)", row, value)
        await guard.write(row, value, token=token)
    update = f"UPDATE {table} SET value = $2 WHERE id = $1"
    turn = iter(range(1 << 62))

    def row() -> str:  # one row per task, as in an application
        return rows[next(turn) % 16]

    async def plain() -> None:
        await pool.execute(update, row(), value)

    async def guarded() -> None:
        await guard.write(row(), value, token=token)

    def report(label: str, found: tuple[float, float], names: tuple[str, str]) -> None:
        first, second = found
        ratio = first / second
        _add(
            results,
            f"postgres {label}",
            {f"{names[0]}_per_s": first, f"{names[1]}_per_s": second, "ratio": ratio},
            [check("guarded/plain", ratio, GOAL, at_most=True)],
        )

    print("guards: postgres, UPDATE vs guarded write, 1 task and 16 tasks", flush=True)
    found = await _interleaved({"write, 1 task": (plain, guarded)}, duration)
    report("write, 1 task", found["write, 1 task"], ("update", "guarded"))
    found = await _interleaved({"write, 16 tasks": (plain, guarded)}, duration, tasks=16)
    report("write, 16 tasks (16 connections)", found["write, 16 tasks"], ("update", "guarded"))

    async def transaction_plain() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(update, "bench:0", value)

    async def transaction_fenced() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await guard.fence_in(conn, "bench:fence", token=token)
            await conn.execute(update, "bench:0", value)

    print("guards: postgres, a transaction with and without fence_in", flush=True)
    found = await _interleaved({"tx": (transaction_plain, transaction_fenced)}, duration)
    first, second = found["tx"]
    _add(
        results,
        "postgres transaction (BEGIN, UPDATE, COMMIT), + fence_in",
        {"plain_per_s": first, "fenced_per_s": second, "ratio": first / second},
        ["one more statement in the transaction: 4 round trips instead of 3"],
    )

    async def select_update() -> None:
        current = await pool.fetchval(f"SELECT value FROM {table} WHERE id = $1", "bench:1")
        await pool.execute(update, "bench:1", current)

    async def update_guarded() -> None:
        await guard.update("bench:1", lambda current: current or value, token=token)

    print("guards: postgres, read-modify-write, SELECT+UPDATE vs update()", flush=True)
    found = await _interleaved({"rmw": (select_update, update_guarded)}, duration)
    report("read-modify-write, 1 task", found["rmw"], ("select_update", "update"))
    return results


# -- etcd -------------------------------------------------------------------------------


async def etcd_section(duration: float) -> list[Result]:
    from lockkit._drivers import etcd as driver
    from lockkit.guards.etcd import EtcdGuard

    from .etcd import _etcd  # the etcd suite's server starter

    results: list[Result] = []
    async with _etcd() as url:
        channel = await driver.open_channel(parse_url(url), None)
        try:
            link = driver.Link(driver.communicator(channel), timeout=5.0)
            _versions["etcd"] = "3.4 (Debian etcd-server)"
            async with EtcdGuard.from_url(url, codec=RAW) as guard:
                results += await _etcd_measure(link, guard, duration)
        finally:
            await channel.close()
    return results


async def _etcd_measure(link: Any, guard: Any, duration: float) -> list[Result]:
    from etcetra.grpc_api import rpc_pb2

    from lockkit._drivers.etcd import op_put, op_range, txn

    results: list[Result] = []
    value = b"x" * 64
    token = FencingToken(time.time_ns() // 1000, name="bench", backend="etcd", owner="bench")
    key, twice = b"bench/guards/plain", b"bench/guards/two-trips/"

    async def put_plain() -> None:
        await link.call(link.kv.Put, rpc_pb2.PutRequest(key=key, value=value), "put")

    async def read_then_put() -> None:
        await link.txn(txn((), [op_range(twice, twice + b"\xff")]), "read")
        await link.txn(txn((), [op_put(twice + b"value", value, 0)]), "put")

    async def write_guarded() -> None:
        await guard.write("bench:guarded", value, token=token)

    for tasks in (1, 32):
        print(f"guards: etcd, {tasks} task(s), Put vs guarded Txn write", flush=True)
        found = await _interleaved(
            {
                f"write, {tasks} task(s), Put": (put_plain, write_guarded),
                f"write, {tasks} task(s), range+Txn": (read_then_put, write_guarded),
            },
            duration,
            tasks=tasks,
        )
        _report(results, "etcd", found, ("plain", "guarded"), goal=None)
    return results


#: One entry per storage: its name and the function that measures it.
SECTIONS: dict[str, Callable[[float], Awaitable[list[Result]]]] = {
    "redis": redis_section,
    "postgres": postgres_section,
    "etcd": etcd_section,
}


async def run(duration: float) -> list[Result]:
    results: list[Result] = []
    for name, section in SECTIONS.items():
        print(f"guards: {name}", flush=True)
        try:
            results += await section(duration)
        except Exception as exc:
            traceback.print_exc()
            text = f"{type(exc).__name__}: {exc}"
            results.append(Result(SUITE, name, {}, text, failed=True))
            print(f"  FAILED: {text}", flush=True)
    return results
