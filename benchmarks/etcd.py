"""etcd:// against the protocol floor and etcetra's lock, on one server, in one run.

The suite starts its own etcd member (``tests.servers.etcd.EtcdServer``, the binary
``make deps`` installs; or ``LOCKKIT_BENCH_ETCD_URL``) and measures, every contender of
a scenario interleaved (:func:`benchmarks.harness.interleave`):

1. uncontended acquire + release cycles: the floor (a put and a delete of one key,
   issued raw through etcetra's ``EtcdCommunicator``), lockkit, and etcetra's
   ``EtcdLockManager`` (the server's lock RPC with a 10 s lease);
2. 8, 64 and 512 tasks on one lock: lockkit over two clients and etcetra's
   ``EtcdLockManager``: acquisitions/s, handoff share and latency, the longest wait and
   the per-worker spread.
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

import anyio
from etcetra.client import EtcdClient, EtcdCommunicator, EtcdLockManager
from etcetra.types import HostPortPair

import lockkit

from .harness import Contender, Result, contention, cycles, interleave, show

SUITE = "etcd"
TASKS = (8, 64, 512)
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

    # -- 1-2. uncontended and contended, every contender interleaved --------------------

    async def measure_uncontended(self) -> None:
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

            manager = _Manager(raw, f"{self.base}/etcetra")

            async def etcetra_cycle() -> None:
                async with manager:
                    pass

            self.results += await interleave(
                SUITE,
                "uncontended",
                [
                    Contender("floor: put + delete (etcetra)", "floor", cycles(floor)),
                    Contender("lockkit", "lockkit", cycles(lockkit_cycle)),
                    Contender("etcetra EtcdLockManager", "peer", cycles(etcetra_cycle)),
                ],
                self.duration,
                "cycles_per_s",
            )

    async def measure_contended(self) -> None:
        async with (
            lockkit.connect(self.url) as a,
            lockkit.connect(self.url) as b,
            EtcdClient(self.address).connect() as raw,
        ):
            for tasks in TASKS:
                name = f"{self.base}/contended-{tasks}"
                mine = [c.lock(name, ttl=30, timeout=60) for c in (a, b)]
                theirs = f"{self.base}/etcetra-contended-{tasks}"
                self.results += await interleave(
                    SUITE,
                    f"contended {tasks}",
                    [
                        Contender(
                            "lockkit", "lockkit", contention(tasks, lambda i, m=mine: m[i % 2])
                        ),
                        Contender(
                            "etcetra EtcdLockManager",
                            "peer",
                            contention(tasks, lambda _i, n=theirs: _Manager(raw, n)),
                        ),
                    ],
                    self.duration,
                    "acquisitions_per_s",
                )


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
        await suite.section("uncontended", 300, suite.measure_uncontended)
        await suite.section("contended", 600, suite.measure_contended)
        return suite.results
