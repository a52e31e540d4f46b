"""One chaos worker process: lock, read-modify-write a counter through a guard, log it.

``python -m tests.fault._worker --url URL --guard REDIS_URL --resource NAME --ttl 1
--out FILE --id w1.0 --stop STOPFILE --seed N [--route HOST:PORT=HOST:PORT ...]``.
Every event is one JSON line
(:class:`lockkit.testing.Event`), flushed at once so a SIGKILL loses at most a torn line.
The worker stops, releasing what it holds and closing its clients, when STOPFILE exists.

``--route A=B`` makes every connection this process opens to address ``A`` go to ``B``
instead (the event loop's ``create_connection`` is wrapped). The chaos run uses it for
Redis Cluster: the client learns the nodes' addresses from ``CLUSTER NODES``, so naming
the worker's proxies in the URL is not enough; with the routes, whatever node address the
client dials, the bytes pass through that worker's own proxy for the node.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import IO, Any

import lockkit
from lockkit.guards.redis import RedisGuard
from lockkit.testing import Event


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class Log:
    def __init__(self, out: IO[str], worker: str, resource: str) -> None:
        self.out = out
        self.worker = worker
        self.resource = resource

    def __call__(
        self, kind: str, token: int | None = None, value: int | None = None, info: str = ""
    ) -> None:
        event = Event(now(), self.worker, kind, self.resource, token, value, info)
        self.out.write(event.to_json() + "\n")
        self.out.flush()


async def cycle(
    locks: lockkit.LockClient,
    guard: RedisGuard[Any],
    log: Log,
    args: argparse.Namespace,
    rng: random.Random,
) -> None:
    # a bounded wait: a waiter that is never woken shows as timeouts, and still stops
    lock = locks.lock(args.resource, ttl=args.ttl, timeout=args.wait, on_lost="raise")
    token: int | None = None
    log("acquire")
    try:
        async with lock as tok:
            token = int(tok)
            log("granted", token)
            lease = lock.lease
            if lease is not None:
                told = token

                def on_lost(_lease: object) -> None:
                    log("lost", told, info="callback")

                lease.on_lost(on_lost)
            current = await guard.read_versioned(args.resource)
            value, version = (0, 0) if current is None else (int(current.value), current.version)
            await asyncio.sleep(rng.uniform(0, args.ttl * 0.4))
            log("write_try", token, value + 1)
            try:
                await guard.write(args.resource, value + 1, token=tok, expect_version=version)
                log("write_ok", token, value + 1)
            except lockkit.StaleTokenError:
                log("write_stale", token, value + 1)
            except lockkit.WriteConflictError:
                log("write_conflict", token, value + 1)
            except (lockkit.BackendUnavailable, TimeoutError, ConnectionError, OSError) as exc:
                log("write_error", token, value + 1, info=type(exc).__name__)
            log("body_end", token)
        log("released", token)
    except lockkit.LockLostError:
        log("lost", token, info="raise")
    except lockkit.LockNotOwnedError:
        log("release_refused", token)
    except lockkit.LockTimeout:
        log("timeout", token)
    except lockkit.BackendUnavailable as exc:
        log("unavailable", token, info=str(exc)[:120])
        await asyncio.sleep(0.1)
    except (TimeoutError, ConnectionError, OSError) as exc:
        log("error", token, info=f"{type(exc).__name__}: {exc}"[:160])
        await asyncio.sleep(0.1)


def parse_routes(specs: list[str]) -> dict[tuple[str, int], tuple[str, int]]:
    routes: dict[tuple[str, int], tuple[str, int]] = {}
    for spec in specs:
        source, _, target = spec.partition("=")
        (host, _, port), (to_host, _, to_port) = source.rpartition(":"), target.rpartition(":")
        routes[(host, int(port))] = (to_host, int(to_port))
    return routes


def install_routes(routes: dict[tuple[str, int], tuple[str, int]]) -> None:
    """Send this process's connections to a routed address to its replacement."""
    if not routes:
        return
    loop = asyncio.get_running_loop()
    create_connection = loop.create_connection

    async def routed(factory: Any, host: Any = None, port: Any = None, **kwargs: Any) -> Any:
        if host is not None and port is not None:
            host, port = routes.get((str(host), int(port)), (host, port))
        return await create_connection(factory, host, port, **kwargs)

    loop.create_connection = routed  # type: ignore[method-assign,assignment]


async def main(args: argparse.Namespace) -> None:
    # the drivers' own logs (aiozk logs every refused reconnect with a traceback) go to
    # a file next to the history; the runner scans it and stderr for what must not be there
    logging.basicConfig(
        filename=str(Path(args.out).with_suffix(".log")),
        level=logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    install_routes(parse_routes(args.route))
    rng = random.Random(args.seed)
    stop = Path(args.stop)
    with open(args.out, "a") as out:  # noqa: ASYNC230 - one open at the start
        log = Log(out, args.id, args.resource)
        log("start", info=str(os.getpid()))
        options: dict[str, Any] = {}
        guard: RedisGuard[Any] = RedisGuard.from_url(args.guard, timeout=2)
        async with guard:
            while not stop.exists():  # noqa: ASYNC240 - a stat between cycles
                try:
                    async with lockkit.connect(args.url, **options) as locks:
                        log("connected")
                        while not stop.exists():  # noqa: ASYNC240 - a stat between cycles
                            await cycle(locks, guard, log, args, rng)
                            await asyncio.sleep(rng.uniform(0, 0.05))
                except (lockkit.BackendUnavailable, TimeoutError, ConnectionError, OSError) as exc:
                    log("error", info=f"connect: {type(exc).__name__}: {exc}"[:160])
                    await asyncio.sleep(0.2)
        log("exit")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--guard", required=True)
    parser.add_argument("--resource", required=True)
    parser.add_argument("--ttl", type=float, default=1.0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--stop", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--route", action="append", default=[], help="HOST:PORT=HOST:PORT, repeatable"
    )
    parser.add_argument("--wait", type=float, default=5.0, help="acquire timeout, seconds")
    return parser.parse_args(argv)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parse(sys.argv[1:])))
