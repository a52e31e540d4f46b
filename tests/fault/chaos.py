"""The chaos run: worker processes fight over one lock while a seeded nemesis breaks things.

``python -m tests.fault.chaos [--backend redis] [--seconds 60] [--seed 1]`` (``make chaos``).
For each backend it starts private servers (``tests/servers``), a separate Redis for
the guard, one :class:`~lockkit.testing.FaultProxy` per worker and lock endpoint, and
``--workers`` processes (``tests/fault/_worker.py``). For ``--seconds`` a nemesis,
seeded by ``--seed``, picks one fault at a time:

* ``pause_holder``: SIGSTOP the worker that holds the lock for 1.2-3 x ttl, then SIGCONT;
* ``kill_holder``: SIGKILL it mid-hold and start a new worker in its place;
* ``pause_server`` / ``restart_server``: SIGSTOP a server (a member of the ensemble
  or cluster, sometimes its leader) for up to 3 s, or restart it (Redis runs without
  persistence, so a restart forgets every lock);
* ``cut_holder``: cut the holder's proxies (black-holed or reset) for 0.5-3 s;
* ``latency``: 50-300 ms each way on the holder's proxies for a few seconds;
* ``failover`` (Sentinel, instead of restarts): ``SENTINEL FAILOVER``;
* ``failover`` (Cluster, besides restarts): the master serving the lock's slot is failed
  over, by ``CLUSTER FAILOVER`` sent to one of its replicas (plain, ``FORCE`` or
  ``TAKEOVER``), or by a SIGSTOP of that master for ``cluster-node-timeout`` (1.5 s) plus
  1.5-3 s, so that the cluster promotes its replica on its own and the old master comes
  back to find itself demoted;
* ``expire_jump`` (the Redis backends and Redlock): PEXPIREAT the lock's owner key to
  within 300 ms (on the master serving it now, for Sentinel and Cluster), what a server
  whose clock jumped forward would do.

Cluster (``cluster``): 3 masters with a replica each, ``cluster-node-timeout`` 1.5 s;
``failover`` is drawn twice as often as each other fault. ``pause_server`` and
``restart_server`` pick the master serving the lock half the time. A restarted node keeps
its ``nodes.conf`` (not its data) and so rejoins the cluster with its old identity; the
nemesis waits until it reports ``cluster_state:ok``, is linked to every node, and every
node sees it linked and not failing, before the next fault (30 s at most, or the run
fails). The client learns the nodes' addresses from ``CLUSTER NODES``, so a worker's URL
names the nodes themselves and the worker routes its own connections to each node
through its proxy for that node (``_worker.py --route``, which wraps the event loop's
``create_connection``); announcing the proxies with ``cluster-announce-port`` would not
do, since a node announces one address to every client and each worker needs its own
proxies to be cut alone.

ZooKeeper runs with ``session_timeout=2`` and etcd with ``lease_ttl=2`` (their defaults
are 10 s): a killed holder's lock stays taken for that long, so liveness is checked
against ``2 x max(ttl, 2) + 1`` seconds there.

Then the faults stop, the workers run on for a quiet period, stop (a worker that does
not stop within 15 s is a hang) and :func:`lockkit.testing.check_history` checks the
merged history. The run prints a table per backend, writes JSON and Markdown to
``chaos/results/`` and exits 1 on any violation, printing the seed and the history
slice of each.

Memory is not run: ``memory://`` locks live in one process and the workers are
processes; its in-process behaviour is covered by the conformance suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import lockkit
from lockkit.guards.redis import RedisGuard
from lockkit.testing import Event, FaultProxy, HistoryReport, check_history, read_history
from tests.servers._base import ProcessServer
from tests.servers._pool import ServerPool
from tests.servers.redis import RedisCluster, RedisClusterNode, RedisSentinelGroup, RedisServer

ROOT: Final = Path(__file__).resolve().parents[2]
RESULTS: Final = ROOT / "chaos" / "results"
BACKENDS: Final = ("redis", "redlock", "zookeeper", "etcd", "sentinel", "cluster")
RESOURCE: Final = "chaos:counter"
#: the lock's owner key in the Redis layout (``{prefix}{name}:o``; the name is the hash tag)
OWNER_KEY: Final = "lockkit:{" + RESOURCE + "}:o"
#: what must not appear in a worker's stderr or in its log file (where the drivers'
#: and asyncio's logging goes); a traceback on stderr is a worker that crashed
LOG_PROBLEMS: Final = (
    "Task was destroyed",
    "Future exception was never retrieved",
    "ResourceWarning",
    "Task exception was never retrieved",
)
STDERR_PROBLEMS: Final = (*LOG_PROBLEMS, "Traceback")


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


@dataclasses.dataclass
class Setup:
    """The servers of one backend and how to reach them."""

    name: str
    servers: list[ProcessServer]
    scheme: str
    query: str = ""
    redis_nodes: list[RedisServer] = dataclasses.field(default_factory=list)
    leader: Callable[[], ProcessServer] | None = None
    #: how long a crashed client's locks stay taken (its session or lease), if longer
    #: than the lock's ttl: liveness is checked against 2 x max(ttl, this) + 1 s
    crash_ttl: float = 0.0
    #: what the URL names, if not ``servers`` (the Sentinels)
    endpoints: list[ProcessServer] = dataclasses.field(default_factory=list)
    path: str = ""
    sentinel: RedisSentinelGroup | None = None
    #: a Redis Cluster: the URL names the nodes themselves and each worker routes its
    #: connections to them through its proxies (``--route``), since the client dials
    #: whatever addresses ``CLUSTER NODES`` lists
    cluster: RedisCluster | None = None

    def url(self, hostports: Sequence[str]) -> str:
        url = f"{self.scheme}://{','.join(hostports)}{self.path}"
        return url + (f"?{self.query}" if self.query else "")

    def named(self) -> list[ProcessServer]:
        return self.endpoints or self.servers

    def redis_targets(self) -> list[RedisServer]:
        """Where an expiry jump goes: every master, the Sentinels' primary, or the
        Cluster master serving the lock's slot now."""
        if self.sentinel is not None:
            return [self.sentinel.primary()]
        if self.cluster is not None:
            return [self.cluster.master_for(OWNER_KEY)]
        return self.redis_nodes

    def key_holders(self) -> list[RedisServer]:
        """Where leftover keys are looked for (a Cluster's masters: its replicas copy them)."""
        if self.cluster is not None:
            return list(self.cluster.masters())
        return self.redis_nodes


def build(pool: ServerPool, backend: str) -> Setup:
    if backend == "redis":
        server = pool.redis()
        return Setup(backend, [server], "redis", "timeout=0.5", redis_nodes=[server], path="/0")
    if backend == "redlock":
        masters = pool.redis_masters(3)
        nodes = list(masters.nodes)
        return Setup(backend, list(nodes), "redlock", "timeout=0.5", redis_nodes=nodes)
    if backend == "zookeeper":
        ensemble = pool.zookeeper_ensemble(3)
        return Setup(
            backend,
            list(ensemble.nodes),
            "zookeeper",
            "session_timeout=2",
            leader=ensemble.leader,
            crash_ttl=2.0,
        )
    if backend == "etcd":
        cluster = pool.etcd_cluster(3)
        return Setup(
            backend,
            list(cluster.nodes),
            "etcd",
            "lease_ttl=2",
            leader=cluster.leader,
            crash_ttl=2.0,
        )
    if backend == "sentinel":
        group = pool.redis_sentinel(replicas=1, sentinels=3)
        return Setup(
            backend,
            list(group.nodes),
            "redis+sentinel",
            "timeout=0.5",
            redis_nodes=list(group.nodes),
            leader=group.primary,
            endpoints=list(group.sentinels),
            path=f"/{group.service_name}",
            sentinel=group,
        )
    if backend == "cluster":
        rcluster = pool.redis_cluster(masters=3, replicas_per_master=1)
        return Setup(
            backend,
            list(rcluster.nodes),
            "redis+cluster",
            "timeout=0.5",
            redis_nodes=list(rcluster.nodes),
            leader=lambda: rcluster.master_for(OWNER_KEY),
            cluster=rcluster,
        )
    raise SystemExit(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")


@dataclasses.dataclass
class Worker:
    index: int
    proxies: list[FaultProxy]
    incarnation: int = 0
    process: subprocess.Popen[bytes] | None = None
    out: Path | None = None
    err: Path | None = None

    @property
    def id(self) -> str:
        return f"w{self.index}.{self.incarnation}"


class Run:
    def __init__(
        self, setup: Setup, guard_url: str, workdir: Path, seed: int, ttl: float, workers: int
    ) -> None:
        self.setup = setup
        self.guard_url = guard_url
        self.workdir = workdir
        self.seed = seed
        self.ttl = ttl
        self.rng = random.Random(seed)
        self.count = workers
        self.workers: list[Worker] = []
        self.stop_file = workdir / "stop"
        self.nemesis_log = (workdir / "nemesis.jsonl").open("a")
        self.last_fault_end: float | None = None

    # -- workers ---------------------------------------------------------------------

    def spawn(self, worker: Worker) -> None:
        worker.out = self.workdir / f"{worker.id}.jsonl"
        worker.err = self.workdir / f"{worker.id}.stderr"
        routes: list[str] = []
        if self.setup.cluster is not None:
            named = self.setup.named()
            url = self.setup.url([s.hostport for s in named])
            for server, proxy in zip(named, worker.proxies, strict=True):
                routes += ["--route", f"{server.hostport}={proxy.hostport}"]
        else:
            url = self.setup.url([p.hostport for p in worker.proxies])
        command = [
            sys.executable,
            "-W",
            "always::ResourceWarning",
            "-m",
            "tests.fault._worker",
            "--url",
            url,
            "--guard",
            self.guard_url,
            "--resource",
            RESOURCE,
            "--ttl",
            str(self.ttl),
            "--out",
            str(worker.out),
            "--id",
            worker.id,
            "--stop",
            str(self.stop_file),
            "--seed",
            str(self.seed * 1000 + worker.index * 10 + worker.incarnation),
            *routes,
        ]
        with worker.err.open("w") as err:
            worker.process = subprocess.Popen(
                command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err
            )

    async def start_workers(self) -> None:
        endpoints = [s.address for s in self.setup.named()]
        for index in range(self.count):
            proxies = [FaultProxy(address) for address in endpoints]
            for proxy in proxies:
                await proxy.start()
            worker = Worker(index, proxies)
            self.workers.append(worker)
            self.spawn(worker)

    def holder(self) -> Worker | None:
        """The worker whose last event says it is inside a hold."""
        for worker in self.rng.sample(self.workers, len(self.workers)):
            if worker.out is None or not worker.out.exists():
                continue
            with worker.out.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 2048))
                lines = f.read().decode(errors="replace").splitlines()
            for line in reversed(lines):
                try:
                    event = Event.from_json(line)
                except (ValueError, TypeError):
                    continue
                if event.kind in ("granted", "write_ok", "write_stale", "write_conflict"):
                    return worker
                break
        return None

    # -- nemesis ---------------------------------------------------------------------

    def log(self, kind: str, info: str, worker: str = "nemesis") -> None:
        event = Event(now(), worker, kind, RESOURCE, info=info)
        self.nemesis_log.write(event.to_json() + "\n")
        self.nemesis_log.flush()

    def faults(self) -> list[str]:
        kinds = ["pause_holder", "kill_holder", "pause_server", "cut_holder", "latency"]
        if self.setup.sentinel is None:
            kinds.append("restart_server")
        if self.setup.sentinel is not None:
            # no restarts: a restarted primary without persistence replicates its emptiness
            kinds.append("failover")
        if self.setup.cluster is not None:  # drawn twice as often: it comes in four kinds
            kinds += ["failover", "failover"]
        if self.setup.redis_nodes:
            kinds.append("expire_jump")
        return kinds

    def server(self) -> ProcessServer:
        if self.setup.leader is not None and self.rng.random() < 0.5:
            with contextlib.suppress(Exception):
                return self.setup.leader()
        return self.rng.choice(self.setup.servers)

    async def fault(self, kind: str) -> None:
        rng = self.rng
        if kind in ("pause_holder", "kill_holder", "cut_holder", "latency"):
            worker = self.holder() or rng.choice(self.workers)
            process = worker.process
            assert process is not None
            if process.poll() is not None:
                return
            if kind == "pause_holder":
                seconds = rng.uniform(1.2, 3.0) * self.ttl
                self.log("fault_start", f"pause_holder {worker.id} {seconds:.2f}s")
                process.send_signal(signal.SIGSTOP)
                await asyncio.sleep(seconds)
                process.send_signal(signal.SIGCONT)
            elif kind == "kill_holder":
                self.log("fault_start", f"kill_holder {worker.id}")
                process.kill()
                await asyncio.to_thread(process.wait)
                self.log("killed", worker.id)
                worker.incarnation += 1
                self.spawn(worker)
            elif kind == "cut_holder":
                seconds = rng.uniform(0.5, 3.0)
                existing: Literal["blackhole", "reset"] = rng.choice(("blackhole", "reset"))
                self.log("fault_start", f"cut_holder {worker.id} {existing} {seconds:.2f}s")
                for proxy in worker.proxies:
                    proxy.cut(new=rng.choice(("refuse", "hang")), existing=existing)
                await asyncio.sleep(seconds)
                for proxy in worker.proxies:
                    await proxy.restore()
            else:
                seconds = rng.uniform(1.0, 4.0)
                up, down = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3)
                self.log("fault_start", f"latency {worker.id} {up:.2f}/{down:.2f}s {seconds:.1f}s")
                for proxy in worker.proxies:
                    proxy.set_latency(up=up, down=down)
                await asyncio.sleep(seconds)
                for proxy in worker.proxies:
                    await proxy.restore()
        elif kind == "pause_server":
            server = self.server()
            seconds = rng.uniform(0.5, 3.0)
            self.log("fault_start", f"pause_server {server.name} {seconds:.2f}s")
            server.pause()
            await asyncio.sleep(seconds)
            server.resume()
        elif kind == "restart_server":
            server = self.server()
            self.log("fault_start", f"restart_server {server.name}")
            await asyncio.to_thread(server.restart)
            if self.setup.cluster is not None:
                assert isinstance(server, RedisClusterNode)
                await self.rejoin(self.setup.cluster, server)
        elif kind == "failover" and self.setup.cluster is not None:
            await self.cluster_failover(self.setup.cluster)
        elif kind == "failover":
            assert self.setup.sentinel is not None
            self.log("fault_start", "failover")
            with contextlib.suppress(Exception):
                sentinel = rng.choice(self.setup.sentinel.sentinels)
                sentinel.call("SENTINEL", "FAILOVER", self.setup.sentinel.service_name)
                await asyncio.sleep(rng.uniform(1.0, 3.0))
        elif kind == "expire_jump":
            try:
                node = rng.choice(self.setup.redis_targets())
            except Exception:
                node = rng.choice(self.setup.redis_nodes)
            ms = int(rng.uniform(0, 0.3) * 1000)
            self.log("fault_start", f"expire_jump {node.name} +{ms}ms")
            with contextlib.suppress(Exception):
                seconds_us = node.call("TIME")  # [seconds, microseconds]
                assert isinstance(seconds_us, list)
                server_ms = int(seconds_us[0]) * 1000 + int(seconds_us[1]) // 1000  # type: ignore[arg-type]
                node.call("PEXPIREAT", OWNER_KEY, server_ms + ms)
        self.log("fault_end", kind)
        self.last_fault_end = now()

    async def cluster_failover(self, cluster: RedisCluster) -> None:
        """Fail over the master serving the lock's slot: ``CLUSTER FAILOVER`` (plain,
        ``FORCE`` or ``TAKEOVER``) sent to one of its replicas, or a SIGSTOP of the master
        past ``cluster-node-timeout`` so that the cluster fails it over on its own."""
        rng = self.rng
        try:
            master = cluster.master_for(OWNER_KEY)
            replicas = cluster.replicas_of(master)
        except Exception as exc:  # the cluster is still settling a previous fault
            self.log("fault_start", "failover skipped")
            self.log("note", f"failover: no master/replica to use: {exc!r}"[:300])
            return
        how = rng.choice(("", "", "FORCE", "TAKEOVER", "stop", "stop"))
        if how == "stop" or not replicas:
            seconds = master.node_timeout_ms / 1000 + rng.uniform(1.5, 3.0)
            self.log("fault_start", f"failover stop {master.name} {seconds:.2f}s")
            master.pause()
            await asyncio.sleep(seconds)
            master.resume()
        else:
            replica = rng.choice(replicas)
            self.log("fault_start", f"failover {how or 'plain'} {replica.name} of {master.name}")
            try:
                reply = replica.call("CLUSTER", "FAILOVER", *([how] if how else []))
            except Exception as exc:
                reply = repr(exc)
            self.log("note", f"CLUSTER FAILOVER {how}: {reply!r}"[:300])
        await asyncio.sleep(rng.uniform(1.0, 3.0))

    async def rejoin(self, cluster: RedisCluster, node: RedisClusterNode) -> None:
        """Wait until a restarted node is back in the cluster: it says
        ``cluster_state:ok``, knows every node and is linked to all of them, and every
        other node sees it linked and not failing."""

        def whole(rows: list[dict[str, str]]) -> bool:
            return len(rows) == len(cluster.nodes) and all(
                r["link"] == "connected" and "fail" not in r["flags"] for r in rows
            )

        def joined() -> bool:
            try:
                if node.cluster_info().get("cluster_state") != "ok":
                    return False
                return all(
                    whole(other.cluster_nodes())
                    for other in cluster.nodes
                    if other.is_running and not other.is_paused
                )
            except Exception:
                return False

        started = now()
        while not await asyncio.to_thread(joined):
            if now() - started > 30:
                self.log("note", f"{node.name} did not rejoin the cluster within 30 s")
                raise RuntimeError(f"{node.name} did not rejoin the cluster after a restart")
            await asyncio.sleep(0.1)
        self.log("note", f"{node.name} rejoined in {now() - started:.2f}s")

    async def nemesis(self, seconds: float) -> None:
        deadline = now() + seconds
        kinds = self.faults()
        while now() < deadline:
            await asyncio.sleep(self.rng.uniform(0.3, 1.5))
            if now() >= deadline:
                break
            await self.fault(self.rng.choice(kinds))

    # -- the end ---------------------------------------------------------------------

    async def stop_workers(self) -> list[str]:
        self.stop_file.touch()
        hangs: list[str] = []
        deadline = now() + 15
        for worker in self.workers:
            process = worker.process
            assert process is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(process.wait, max(0.1, deadline - now()))
            if process.poll() is None:
                hangs.append(worker.id)
                process.kill()
                process.wait()
        for worker in self.workers:
            for proxy in worker.proxies:
                await proxy.aclose()
        return hangs

    def stderr_problems(self) -> list[str]:
        found = []
        for pattern, problems in (("*.stderr", STDERR_PROBLEMS), ("*.log", LOG_PROBLEMS)):
            for path in sorted(self.workdir.glob(pattern)):
                for line in path.read_text(errors="replace").splitlines():
                    if any(p in line for p in problems):
                        found.append(f"{path.name}: {line.strip()[:200]}")
        return found

    async def probe(self) -> None:
        """Log the lock's holder and queue as the server reports them (``probe``)."""
        url = self.setup.url([s.hostport for s in self.setup.named()])
        try:
            async with lockkit.connect(url) as locks:
                info = await locks.inspect(RESOURCE)
            self.log("probe", repr(info)[:2000])
        except (lockkit.LockError, OSError) as exc:
            self.log("probe", f"inspect failed: {exc!r}"[:300])

    async def leftovers(self) -> list[str]:
        """What the servers still hold, polled until ``2 x ttl + session`` passed."""
        url = self.setup.url([s.hostport for s in self.setup.named()])
        found: list[str] = []
        deadline = now() + 2 * self.ttl + 6
        while True:
            found = []
            async with lockkit.connect(url) as locks:
                info = await locks.inspect(RESOURCE)
                if info.holder is not None or info.waiters:
                    found.append(f"{self.setup.name}: {RESOURCE} still has {info!r}")
            for node in self.setup.key_holders():
                keys = node.call("KEYS", "lockkit:*")
                assert isinstance(keys, list)
                for key in keys:
                    name = key.decode() if isinstance(key, bytes) else str(key)
                    if not name.endswith(":f"):
                        found.append(f"{node.name}: key {name}")
            if not found or now() > deadline:
                return found
            await asyncio.sleep(0.5)


async def run_backend(
    backend: str, seconds: float, seed: int, ttl: float, workers: int, out: Path
) -> tuple[HistoryReport, dict[str, Any]]:
    pool = ServerPool("chaos")
    run: Run | None = None
    try:
        setup = build(pool, backend)
        guard_server = pool.redis()
        workdir = out / f"{backend}-seed{seed}"
        workdir.mkdir(parents=True, exist_ok=True)
        for stale in workdir.iterdir():  # a rerun of the same seed starts afresh
            stale.unlink()
        run = Run(setup, guard_server.url, workdir, seed, ttl, workers)
        started = now()
        await run.start_workers()
        await asyncio.sleep(1.0)
        await run.nemesis(seconds)
        quiet = 2 * max(ttl, setup.crash_ttl) + 3
        await asyncio.sleep(quiet / 2)
        await run.probe()  # what the server says mid-quiet, for a liveness violation
        await asyncio.sleep(quiet / 2)
        hangs = await run.stop_workers()
        run.nemesis_log.close()
        async with RedisGuard.from_url(guard_server.url) as guard:
            final = await guard.read(RESOURCE)
        leftovers = await run.leftovers()
        events = read_history(sorted(workdir.glob("*.jsonl")))
        report = check_history(
            events,
            ttl=max(ttl, setup.crash_ttl),
            final_values={RESOURCE: None if final is None else int(final)},
            quiet_from=run.last_fault_end,
            leftovers=leftovers,
            hangs=hangs,
            stderr_problems=run.stderr_problems(),
        )
        faults: dict[str, int] = {}
        for e in events:
            if e.kind == "fault_end":
                faults[e.info] = faults.get(e.info, 0) + 1
        meta = {
            "backend": backend,
            "seed": seed,
            "seconds": seconds,
            "elapsed": round(now() - started, 1),
            "ttl": ttl,
            "workers": workers,
            "faults": faults,
            "history": str(workdir),
        }
        return report, meta
    finally:
        for worker in run.workers if run is not None else ():
            if worker.process is not None and worker.process.poll() is None:
                worker.process.kill()  # an interrupted run leaves no worker behind
                worker.process.wait()
        pool.close()


def row(report: HistoryReport, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "backend": meta["backend"],
        "seed": meta["seed"],
        "seconds": meta["seconds"],
        "faults": sum(meta["faults"].values()),
        "acquisitions": report.acquisitions,
        "accepted writes": report.accepted_writes,
        "refused stale": report.refused_stale,
        "refused conflict": report.refused_conflict,
        "overlaps told": report.overlaps_told,
        "overlaps untold": report.overlaps_untold,
        "token regressions": report.token_regressions,
        "lost updates": report.lost_updates,
        "max gap s": round(report.max_gap, 2),
        "recovery s": None if report.recovery is None else round(report.recovery, 2),
        "leftovers": report.leftovers,
        "hangs": report.hangs,
        "violations": len(report.violations),
    }


def print_table(rows: list[dict[str, Any]]) -> str:
    """One column per backend, one line per figure; returns the same as Markdown."""
    from rich.console import Console
    from rich.table import Table

    def cell(value: object) -> str:
        return "-" if value is None else str(value)

    table = Table(title="lockkit chaos")
    table.add_column("")
    for r in rows:
        table.add_column(str(r["backend"]), justify="right")
    figures = [k for k in rows[0] if k != "backend"]
    for figure in figures:
        table.add_row(figure, *(cell(r[figure]) for r in rows))
    Console(width=160).print(table)
    head = "| | " + " | ".join(str(r["backend"]) for r in rows) + " |"
    rule = "|---|" + "|".join("---:" for _ in rows) + "|"
    body = ["| " + f + " | " + " | ".join(cell(r[f]) for r in rows) + " |" for f in figures]
    return "\n".join([head, rule, *body])


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fault.chaos")
    parser.add_argument("--backend", default="all", help="all, or one of " + ", ".join(BACKENDS))
    parser.add_argument("--seconds", type=float, default=60.0, help="nemesis time per backend")
    parser.add_argument("--seed", type=int, default=None, help="default: a new one each run")
    parser.add_argument("--ttl", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    backends = BACKENDS if args.backend == "all" else tuple(args.backend.split(","))
    print(f"chaos: backends {', '.join(backends)}, {args.seconds:g}s each, seed {seed}")
    print("chaos: memory is not run (its locks live in one process; workers are processes)")
    rows: list[dict[str, Any]] = []
    metas: list[dict[str, Any]] = []
    failed = False
    for backend in backends:
        report, meta = await run_backend(
            backend, args.seconds, seed, args.ttl, args.workers, args.out
        )
        rows.append(row(report, meta))
        metas.append(meta)
        print(f"chaos: {backend}: faults {json.dumps(meta['faults'])}, history {meta['history']}")
        for violation in report.violations:
            failed = True
            print(violation.render(seed))
    markdown = print_table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (args.out / f"{stamp}-seed{seed}.json").write_text(
        json.dumps({"rows": rows, "runs": metas}, indent=2) + "\n"
    )
    (args.out / f"{stamp}-seed{seed}.md").write_text(
        f"`python -m tests.fault.chaos --backend {args.backend} --seconds {args.seconds:g} "
        f"--seed {seed}`\n\n{markdown}\n"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
