"""Redis Sentinel and Cluster: what following a primary or a slot map costs.

For each topology, started the way the tests start it (Sentinel: a primary, one replica
and three Sentinels; Cluster: three masters with a replica each), in one run and
interleaved:

* **uncontended**: lockkit through the topology's URL (``redis+sentinel://`` or
  ``redis+cluster://``); lockkit through a plain ``redis://`` URL naming the node that
  serves the lock (the primary, or on Cluster the first master, every lock name and key
  chosen to live there), which shows what the topology itself costs; the floor, two
  ``EVALSHA`` of ``return 1`` through redis.asyncio on that node; and redis-py's asyncio
  ``Lock`` on that node (1 ms retry sleep);
* **contended 8 and 64**: the same lockkit pair (two clients each) and redis-py's Lock.

The figures a user of Sentinel or Cluster wants are the two lockkit ratios: against the
plain URL (the price of the topology) and against the floor.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

import lockkit
from lockkit._drivers.redis.scripts import LockKeys

from .harness import Contender, Result, contention, cycles, interleave, wanted

SUITE = "redis_ha"
TASKS = (8, 64)


@contextlib.asynccontextmanager
async def _topologies() -> AsyncIterator[dict[str, tuple[str, Any]]]:
    """``{"sentinel": (url, group), "cluster": (url, cluster)}``, started for the run."""
    from tests.servers._pool import ServerPool  # the test harness's servers

    pool = ServerPool("bench-ha")
    try:
        sentinel = pool.redis_sentinel(replicas=1, sentinels=3)
        cluster = pool.redis_cluster(masters=3, replicas_per_master=1)
        yield {"sentinel": (sentinel.url, sentinel), "cluster": (cluster.url, cluster)}
    finally:
        pool.close()
        shutil.rmtree(pool.root, ignore_errors=True)


def _node(kind: str, servers: Any) -> tuple[str, int]:
    """The node the measurements go to: the primary, or the first master."""
    node = servers.primary() if kind == "sentinel" else servers.masters()[0]
    address: tuple[str, int] = node.address
    return address


def _served_by(kind: str, servers: Any, node: tuple[str, int], base: str, key: Any) -> str:
    """``base``, or on Cluster the first ``base:N`` whose key (``key(name)``) lives on
    ``node``, so that every contender of a scenario talks to the same server."""
    if kind == "sentinel":
        return base
    for i in range(1000):
        name = f"{base}:{i}"
        if servers.master_for(key(name)).address == node:
            return name
    raise RuntimeError(f"no name near {base!r} is served by {node}")  # pragma: no cover


def _lockkit_key(name: str) -> str:
    return LockKeys("lockkit:", name).owner


async def _measure(kind: str, url: str, servers: Any, duration: float) -> list[Result]:
    results: list[Result] = []
    node = _node(kind, servers)
    direct = f"redis://{node[0]}:{node[1]}/0"

    def lockkit_name(base: str) -> str:
        return _served_by(kind, servers, node, base, _lockkit_key)

    def peer_key(base: str) -> str:
        return _served_by(kind, servers, node, base, lambda key: key)

    name = lockkit_name(f"bench:{kind}")
    async with contextlib.AsyncExitStack() as stack:
        ha = [await stack.enter_async_context(lockkit.connect(url)) for _ in "ab"]
        plain = [await stack.enter_async_context(lockkit.connect(direct)) for _ in "ab"]
        node_conn = aioredis.Redis.from_url(direct, single_connection_client=True)
        stack.push_async_callback(node_conn.aclose)
        pool = aioredis.Redis.from_url(direct, max_connections=256)
        stack.push_async_callback(pool.aclose)
        sha = await node_conn.script_load("return 1")

        async def floor() -> None:
            await node_conn.evalsha(sha, 0)
            await node_conn.evalsha(sha, 0)

        def cycle(lock: lockkit.Lock) -> Any:
            async def step() -> None:
                await lock.acquire()
                await lock.release()

            return step

        peer = pool.lock(peer_key(f"bench:{kind}:redis-py"), timeout=30, sleep=0.001)

        async def peer_cycle() -> None:
            async with peer:
                pass

        scenario = f"{kind}, uncontended"
        if wanted(scenario):
            results += await interleave(
                SUITE,
                scenario,
                [
                    Contender("floor: 2x EVALSHA, redis.asyncio", "floor", cycles(floor)),
                    Contender(f"lockkit {kind}", "lockkit", cycles(cycle(ha[0].lock(name)))),
                    Contender(
                        "lockkit redis:// to that node",
                        "peer",
                        cycles(cycle(plain[0].lock(lockkit_name(f"{name}:plain")))),
                    ),
                    Contender("redis-py asyncio Lock (sleep 0.001)", "peer", cycles(peer_cycle)),
                ],
                duration,
                "cycles_per_s",
            )
        for tasks in TASKS:
            scenario = f"{kind}, contended {tasks}"
            if not wanted(scenario):
                continue
            key = lockkit_name(f"bench:{kind}:contended:{tasks}")
            plain_key = lockkit_name(f"{key}:plain")
            peer_name = peer_key(f"bench:{kind}:contended:{tasks}:redis-py")
            ha_locks = [c.lock(key, ttl=30, timeout=60) for c in ha]
            plain_locks = [c.lock(plain_key, ttl=30, timeout=60) for c in plain]
            results += await interleave(
                SUITE,
                scenario,
                [
                    Contender(
                        f"lockkit {kind}",
                        "lockkit",
                        contention(tasks, lambda i, m=ha_locks: m[i % 2]),
                    ),
                    Contender(
                        "lockkit redis:// to that node",
                        "peer",
                        contention(tasks, lambda i, m=plain_locks: m[i % 2]),
                    ),
                    Contender(
                        "redis-py asyncio Lock (sleep 0.001)",
                        "peer",
                        contention(
                            tasks,
                            lambda _i, k=peer_name: pool.lock(k, timeout=30, sleep=0.001),
                        ),
                    ),
                ],
                duration,
                "acquisitions_per_s",
            )
    return results


async def run(duration: float) -> list[Result]:
    results: list[Result] = []
    async with _topologies() as topologies:
        for kind, (url, servers) in topologies.items():
            print(f"{SUITE}: {kind} at {url}", flush=True)
            results += await _measure(kind, url, servers, duration)
    return results
