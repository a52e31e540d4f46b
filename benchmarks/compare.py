"""Two checkouts of lockkit on one Redis server, interleaved, as ratios to the floor.

python -m benchmarks.compare --baseline PATH [--candidate PATH] [--repeats N] [--quick]

Loopback speed drifts by several times over minutes, so absolute rates of two separate
runs say nothing. This starts one ``redis-server`` (or uses ``LOCKKIT_BENCH_REDIS_URL``)
and then, ``--repeats`` times, runs a measuring subprocess for A (the baseline) and B
(the candidate, by default this checkout) in turn, each with ``PYTHONPATH`` at its
checkout. Each subprocess measures the protocol floor (two ``EVALSHA`` round trips on
redis-py asyncio, in two halves around the next one), uncontended acquire + release
cycles, and 8 tasks over two clients on one lock: handoffs/s, and acquisitions/s with
``fair=false``. The subprocess uses only the public API both versions share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

#: (key, label, per-repetition ratio to the floor or not)
METRICS = (
    ("floor", "floor: 2x EVALSHA cycles/s", False),
    ("uncontended", "lockkit uncontended cycles/s", False),
    ("uncontended", "  uncontended / floor", True),
    ("fair", "8 tasks, handoffs/s", False),
    ("fair", "  8 tasks / floor", True),
    ("unfair", "8 tasks fair=false, acquisitions/s", False),
    ("unfair", "  fair=false / floor", True),
)

# -- the measuring subprocess: stdlib, redis-py and lockkit's shared public API ---------


async def _rate(step: Callable[[], Awaitable[object]], duration: float) -> float:
    for _ in range(50):  # warm up connections and script caches
        await step()
    count, start = 0, time.perf_counter()
    while (now := time.perf_counter()) < start + duration:
        for _ in range(20):
            await step()
        count += 20
    return count / (now - start)


async def _contended(url: str, name: str, tasks: int, duration: float) -> tuple[float, float]:
    """Acquisitions and changes of holder per second, ``tasks`` tasks over two clients."""
    import lockkit

    async with lockkit.connect(url) as a, lockkit.connect(url) as b:
        locks = [c.lock(name, ttl=30, timeout=60) for c in (a, b) for _ in range(tasks // 2)]
        for lock in locks[:: tasks // 2]:  # open both connections first
            async with lock:
                pass
        last, acquisitions, handoffs = -1, 0, 0
        start = time.perf_counter()
        stop = start + duration

        async def worker(i: int) -> None:
            nonlocal last, acquisitions, handoffs
            while time.perf_counter() < stop:
                async with locks[i]:
                    if time.perf_counter() < stop:
                        acquisitions += 1
                        handoffs += int(last not in (-1, i))
                    last = i

        await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(tasks))), duration + 60)
    return acquisitions / duration, handoffs / duration


async def _measure(url: str, duration: float, name: str) -> dict[str, float | None]:
    import redis.asyncio as aioredis

    import lockkit

    conn = aioredis.Redis.from_url(url, single_connection_client=True)
    sha = await conn.script_load("return 1")

    async def floor_cycle() -> None:
        await conn.evalsha(sha, 0)
        await conn.evalsha(sha, 0)

    out: dict[str, float | None] = {}
    async with lockkit.connect(url) as locks:
        lock = locks.lock(f"{name}:free", ttl=30, timeout=10)

        async def cycle() -> None:
            await lock.acquire()
            await lock.release()

        before = await _rate(floor_cycle, duration / 2)
        out["uncontended"] = await _rate(cycle, duration)
        out["floor"] = (before + await _rate(floor_cycle, duration / 2)) / 2
    await conn.aclose()
    sep = "&" if "?" in url else "?"
    # fair: every acquisition should be a handoff; fair=false lets a releaser barge back
    # in, so count its acquisitions.
    for key, target in (("fair", url), ("unfair", f"{url}{sep}fair=false")):
        try:
            acquired, handed = await _contended(target, f"{name}:{key}", 8, duration)
            out[key] = handed if key == "fair" else acquired
        except Exception as exc:  # a version without the option: leave it out
            print(f"{key}: {type(exc).__name__}: {exc}", file=sys.stderr)
            out[key] = None
    return out


def child(url: str, duration: float, name: str, checkout: str) -> None:
    import lockkit

    if not Path(lockkit.__file__).resolve().is_relative_to(Path(checkout).resolve()):
        sys.exit(f"lockkit came from {lockkit.__file__}, not from {checkout}")
    print(json.dumps(asyncio.run(_measure(url, duration, name))))


# -- the driver ------------------------------------------------------------------------


def _run_child(checkout: Path, url: str, duration: float, name: str) -> dict[str, float | None]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    # -P: no script directory on sys.path (benchmarks/redis.py would shadow redis-py).
    argv = [sys.executable, "-P", __file__, "--child", url, str(duration), name, str(checkout)]
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=10 * duration + 120, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"measuring {checkout} failed:\n{done.stderr}")
    if done.stderr.strip():
        print(done.stderr.strip(), file=sys.stderr)
    result: dict[str, float | None] = json.loads(done.stdout.splitlines()[-1])
    return result


def _value(run: dict[str, float | None], key: str, per_floor: bool) -> float | None:
    value, floor = run[key], run["floor"]
    if value is None or not floor:
        return None
    return value / floor if per_floor else value


def _commit(checkout: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(checkout), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "?"


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5])
    here = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare")
    parser.add_argument("--baseline", type=Path, required=True, help="checkout A")
    parser.add_argument("--candidate", type=Path, default=here, help="checkout B (this one)")
    parser.add_argument("--repeats", type=int, help="A/B pairs (default 7, --quick 3)")
    parser.add_argument("--slice", type=float, help="seconds per measurement (3, --quick 2)")
    parser.add_argument("--quick", action="store_true", help="about a minute in all")
    parser.add_argument("--out", type=Path, default=here / "benchmarks/results/compare.json")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    duration = args.slice or (2.0 if args.quick else 3.0)
    versions = {"A": args.baseline.resolve(), "B": args.candidate.resolve()}

    from rich.console import Console
    from rich.table import Table

    from tests.servers.redis import RedisServer

    runs: dict[str, list[dict[str, float | None]]] = {"A": [], "B": []}
    server = None
    workdir = Path(tempfile.mkdtemp(prefix="lockkit-compare-"))
    url = os.environ.get("LOCKKIT_BENCH_REDIS_URL", "")
    if not url:
        server = RedisServer("compare-redis", workdir)
        server.start()
        url = server.url
    try:
        for rep in range(repeats):
            for label, checkout in versions.items():
                runs[label].append(_run_child(checkout, url, duration, f"compare:{label}:{rep}"))
                shown = ", ".join(f"{k}={v or 0:,.0f}" for k, v in runs[label][-1].items())
                print(f"[{rep + 1}/{repeats}] {label}: {shown}", flush=True)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    table = Table(title=f"lockkit A={_commit(versions['A'])} vs B={_commit(versions['B'])}")
    table.add_column("measurement")
    for label in versions:
        table.add_column(f"{label} median", justify="right")
        table.add_column(f"{label} min-max", justify="right")
    table.add_column("B/A (paired median)", justify="right")
    summary: dict[str, dict[str, float | None]] = {}
    for key, title, per_floor in METRICS:
        values = [[_value(run, key, per_floor) for run in runs[label]] for label in versions]
        pairs = [y / x for x, y in zip(*values, strict=True) if x and y is not None]
        a, b = ([v for v in vs if v is not None] for vs in values)
        ratio = statistics.median(pairs) if pairs else None
        summary[title.strip()] = {
            "a_median": statistics.median(a) if a else None,
            "b_median": statistics.median(b) if b else None,
            "b_over_a": ratio,
        }
        fmt = "{:.3f}" if per_floor else "{:,.0f}"
        cells: list[str] = []
        for s in (a, b):
            if s:
                spread = f"{fmt.format(min(s))}-{fmt.format(max(s))}"
                cells += [fmt.format(statistics.median(s)), spread]
            else:
                cells += ["n/a", "n/a"]
        table.add_row(title, *cells, "n/a" if ratio is None else f"{ratio:.3f}")
    Console(width=max(120, Console().width)).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: {"path": str(v), "commit": _commit(v)} for k, v in versions.items()}
    report = {"versions": meta, "repeats": repeats, "slice_s": duration, "url": url}
    args.out.write_text(json.dumps({**report, "summary": summary, "runs": runs}, indent=2))
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
