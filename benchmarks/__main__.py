"""Run the benchmark suites and write JSON, a Markdown table and PNG charts.

Every suite starts the servers it needs (the test harness's classes) unless a
``LOCKKIT_BENCH_*_URL`` names one, and measures each scenario's contenders (the floor,
lockkit, the other libraries) taking turns, ``--repeats`` times; the report gives
medians, the min-max over the repetitions and lockkit's same-run ratios.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

import lockkit

from . import harness, report
from .harness import Result

SUITES = ("memory", "otel", "redis", "redis_ha", "redlock", "zookeeper", "etcd", "guards")

#: Wall-clock seconds each suite takes with the defaults (3 repetitions of 1 s), on
#: 2 cores (a measured run took 8 minutes); --quick and --smoke take a fraction. The
#: total stays under 15 minutes.
BUDGET_S = {
    "memory": 60,
    "otel": 15,
    "redis": 240,
    "redis_ha": 100,
    "redlock": 150,
    "zookeeper": 90,
    "etcd": 60,
    "guards": 60,
}

EPILOG = f"""
suites and their budget at the defaults (2 cores): {
    ", ".join(f"{s} ~{b // 60}m{b % 60:02d}s" for s, b in BUDGET_S.items())
}; about {sum(BUDGET_S.values()) // 60} minutes in all.

examples:
  python -m benchmarks                            everything (make bench)
  python -m benchmarks --quick                    a ~2-minute pass over everything
  python -m benchmarks --suites redis --scenarios uncontended,"contended 64"
  python -m benchmarks --suites redis,redlock --repeats 5 --duration 2
  python -m benchmarks.report benchmarks/results/latest/results.json --docs
                                                  re-render, and publish to docs/

servers: each suite starts its own (redis-server, ZooKeeper, etcd, PostgreSQL from
`make deps`) unless LOCKKIT_BENCH_REDIS_URL, LOCKKIT_BENCH_REDLOCK_URL,
LOCKKIT_BENCH_ZOOKEEPER_URL, LOCKKIT_BENCH_ETCD_URL or LOCKKIT_BENCH_POSTGRES_URL
names one.
"""


class _RichProgress(harness.Progress):
    def __init__(self, progress: Progress, suites: list[str]) -> None:
        self.progress = progress
        self.total = progress.add_task("all suites", total=sum(BUDGET_S.get(s, 60) for s in suites))
        self.current = progress.add_task("", total=None)
        self.measurements = 0

    def suite(self, name: str, budget: float) -> None:
        self.progress.update(self.current, description=f"{name}: starting")

    def step(self, label: str) -> None:
        self.progress.update(self.current, description=label)

    def done(self) -> None:
        self.measurements += 1
        self.progress.advance(self.current)


def _commit() -> str:
    """The measured tree: ``git describe --always --dirty`` ("-dirty": edits not committed)."""
    import subprocess

    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    return done.stdout.strip() or "?"


def _load() -> tuple[float, ...]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


async def main_async(
    suites: list[str], duration: float, progress: _RichProgress | None, scale: float
) -> tuple[list[Result], dict[str, Any]]:
    results: list[Result] = []
    env: dict[str, Any] = {
        "lockkit": lockkit.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "duration_s": duration,
        "repeats": harness.REPEATS,
        "load_before": _load(),
        "commit": _commit(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "servers": {},
        "suite_seconds": {},
        "libraries": report.library_versions(),
    }
    for suite in suites:
        module = importlib.import_module(f"benchmarks.{suite}")
        started = time.perf_counter()
        if progress is not None:
            progress.suite(suite, BUDGET_S.get(suite, 60) * scale)
        print(f"== {suite}", flush=True)
        try:
            suite_results = await module.run(duration)
        except Exception as exc:  # a suite that cannot start is a failed row, not a crash
            import traceback

            traceback.print_exc()
            suite_results = [Result(suite, "suite", {}, f"{type(exc).__name__}: {exc}", True)]
        results.extend(suite_results)
        took = time.perf_counter() - started
        env["suite_seconds"][suite] = round(took, 1)
        print(f"== {suite}: {took:.0f}s", flush=True)
        if progress is not None:
            progress.progress.advance(progress.total, BUDGET_S.get(suite, 60))
        if hasattr(module, "server_versions"):
            env["servers"].update(module.server_versions())
    env["load_after"] = _load()
    return results, env


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--suites", default=",".join(SUITES), help=f"comma-separated (default: {','.join(SUITES)})"
    )
    parser.add_argument(
        "--scenarios",
        default="",
        help="comma-separated scenario prefixes to run (e.g. 'uncontended,contended 8'); "
        "default: all",
    )
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each scenario")
    parser.add_argument(
        "--quick", action="store_true", help="~2 minutes: 0.25 s measurements, 2 repetitions"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CI: tiny measurements, 1 repetition, smaller crowds; fails unless every "
        "contender ran and produced numbers",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    parser.add_argument(
        "--docs", action="store_true", help="also publish the table and charts into docs/"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    scale = 1.0
    if args.quick:
        args.duration, args.repeats, scale = min(args.duration, 0.25), min(args.repeats, 2), 0.2
    if args.smoke:
        args.duration, args.repeats, scale = 0.1, 1, 0.1
        harness.SMOKE = True
    harness.REPEATS = args.repeats
    harness.SCENARIOS = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    suites = [s for s in args.suites.split(",") if s]
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        sys.exit(f"unknown suite(s): {', '.join(unknown)}; known: {', '.join(SUITES)}")
    console = Console(stderr=True)
    started = time.perf_counter()
    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        redirect_stdout=True,
        redirect_stderr=True,
    ) as bar:
        shown = _RichProgress(bar, suites)
        harness.progress = shown
        results, env = anyio.run(main_async, suites, args.duration, shown, scale)
    env["total_seconds"] = round(time.perf_counter() - started, 1)
    env["mode"] = "smoke" if args.smoke else "quick" if args.quick else "full"
    paths = report.write(results, env, args.out, charts=not args.no_charts, docs=args.docs)
    out = Console(width=max(160, Console().width))
    out.print(report.rich_table(results))
    for path in paths:
        out.print(f"wrote {path}")
    out.print(f"{env['total_seconds']:.0f}s in all; load average {env['load_after'][0]:.2f}")
    failed = [r for r in results if r.failed]
    if failed:
        out.print(f"{len(failed)} measurement(s) failed or could not run:")
        for r in failed:
            out.print(f"  {r.suite}: {r.name}: {r.notes}")
        sys.exit(1)


if __name__ == "__main__":
    main()
