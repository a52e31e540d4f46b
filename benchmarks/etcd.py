"""etcd:// against the protocol floor and etcetra's lock, on one server, in one run.

The suite starts its own etcd member (``tests.servers.etcd.EtcdServer``, the binary
``make deps`` installs; or ``LOCKKIT_BENCH_ETCD_URL``) and measures:

1. uncontended acquire + release cycles, the contenders taking turns (``rounds`` rounds,
   each keeps its best): the floor (a put and a delete of one key, issued raw through
   etcetra's ``EtcdCommunicator``), lockkit, and etcetra's ``EtcdLockManager`` (the
   server's lock RPC with a 10 s lease);
2. 8 and 64 tasks on one lock, one lockkit client: acquisitions/s, handoff latency,
   and how many acquisitions by others one wait saw (FIFO keeps it at tasks - 1);
   etcetra's ``EtcdLockManager`` with 8 tasks for comparison.

Targets (from the backend's design notes) are checked and reported, never enforced.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import shutil
import tempfile
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
from etcetra.client import EtcdClient, EtcdCommunicator, EtcdLockManager
from etcetra.types import HostPortPair

import lockkit

from .harness import Result, check, contended, contended_locks, rate, show

SUITE = "etcd"
_versions: dict[str, str] = {}


def server_versions() -> dict[str, str]:
    return dict(_versions)


@contextlib.asynccontextmanager
async def _etcd() -> AsyncIterator[str]:
    """``LOCKKIT_BENCH_ETCD_URL``, or a fresh member stopped afterwards (the server
    starter is borrowed from the test fixtures, on purpose: one way to run etcd)."""
    given = os.environ.get("LOCKKIT_BENCH_ETCD_URL")
    if given:
        yield given
        return
    from tests.servers.etcd import EtcdServer

    workdir = Path(tempfile.mkdtemp(prefix="lockkit-bench-etcd-"))
    server = EtcdServer("bench-etcd", workdir)
    try:
        server.start()
        print(f"etcd: started a member on {server.hostport}")
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


class _Suite:
    def __init__(self, url: str, duration: float) -> None:
        self.url = url
        host, _, port = url.split("://", 1)[1].split(",")[0].partition(":")
        self.address = HostPortPair(host, int(port or 2379))
        self.duration = duration
        self.base = f"bench-{secrets.token_hex(3)}"
        self.results: list[Result] = []
        self.floor = math.nan

    def add(self, name: str, figures: dict[str, float], checks: Sequence[str] = ()) -> None:
        notes = "; ".join(checks)
        self.results.append(Result(SUITE, name, figures, notes))
        print(f"  {name}: {show(figures)}" + (f"\n    {notes}" if notes else ""), flush=True)

    async def section(self, title: str, limit: float, body: Callable[[], Awaitable[None]]) -> None:
        print(f"etcd: {title}", flush=True)
        try:
            with anyio.fail_after(limit):
                await body()
        except Exception as exc:
            traceback.print_exc()
            text = f"{type(exc).__name__}: {exc}"
            self.results.append(Result(SUITE, title, {}, text, failed=True))
            print(f"  FAILED: {text}", flush=True)

    # -- 1. uncontended ----------------------------------------------------------------

    async def measure_uncontended(self, rounds: int = 3) -> None:
        best: dict[str, float] = {}
        key = f"{self.base}/floor"
        async with (
            EtcdClient(self.address).connect() as raw,
            lockkit.connect(self.url) as locks,
        ):
            lock = locks.lock(f"{self.base}/uncontended", ttl=30)

            async def floor() -> None:
                await raw.put(key, "x")
                await raw.delete(key)

            async def lockkit_cycle() -> None:
                await lock.acquire()
                await lock.release()

            manager_name = f"{self.base}/etcetra"

            async def etcetra_cycle() -> None:
                manager = EtcdLockManager(manager_name, raw.channel, ttl=10)
                await manager.__aenter__()
                await manager.__aexit__(None, None, None)

            steps: dict[str, Callable[[], Awaitable[None]]] = {
                "floor (put + delete)": floor,
                "lockkit": lockkit_cycle,
                "etcetra EtcdLockManager": etcetra_cycle,
            }
            for _ in range(rounds):  # interleaved: each round measures every contender
                for label, step in steps.items():
                    best[label] = max(best.get(label, 0.0), await rate(step, self.duration))
        self.floor = best["floor (put + delete)"]
        for label, cycles in best.items():
            figures = {"cycles_per_s": cycles, "ratio_to_floor": cycles / self.floor}
            checks = []
            if label == "lockkit":
                checks.append(check("ratio_to_floor", cycles / self.floor, 0.85))
            self.add(f"uncontended: {label}", figures, checks)

    # -- 2. contended --------------------------------------------------------------------

    async def measure_contended(self) -> None:
        async with lockkit.connect(self.url) as locks:
            for tasks, goal in ((8, 600.0), (64, 700.0)):
                figures = await contended(
                    [locks], f"{self.base}/contended-{tasks}", tasks, self.duration
                )
                self.add(
                    f"contended {tasks} tasks: lockkit",
                    figures,
                    [
                        check("acquisitions_per_s", figures["acquisitions_per_s"], goal),
                        check("handoff_p99_ms", figures["handoff_p99_ms"], 5.0, at_most=True),
                        check(
                            "max_turns_waited", figures["max_turns_waited"], tasks - 1, exactly=True
                        ),
                    ],
                )
        async with EtcdClient(self.address).connect() as raw:
            name = f"{self.base}/etcetra-contended"

            def make_lock(i: int) -> Any:
                return _Manager(raw, name)

            figures = await contended_locks(make_lock, 8, self.duration)
            self.add("contended 8 tasks: etcetra EtcdLockManager", figures)


class _Manager:
    """etcetra's lock as a reusable async context manager (a new manager per turn)."""

    def __init__(self, raw: EtcdCommunicator, name: str) -> None:
        self.raw = raw
        self.name = name
        self.current: EtcdLockManager | None = None

    async def __aenter__(self) -> None:
        self.current = EtcdLockManager(self.name, self.raw.channel, ttl=10)
        await self.current.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        assert self.current is not None
        await self.current.__aexit__(None, None, None)


async def run(duration: float) -> list[Result]:
    async with _etcd() as url:
        suite = _Suite(url, duration)
        _versions["etcd"] = "3.4 (Debian etcd-server)"
        await suite.section("uncontended", 120, suite.measure_uncontended)
        await suite.section("contended", 180, suite.measure_contended)
        return suite.results
