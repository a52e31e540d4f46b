"""Run the benchmarks in one event loop and write JSON plus a table.

python -m benchmarks [--suites memory,redis,redlock,zookeeper,etcd,guards] [--duration 2] [--quick]
                     [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.table import Table

import lockkit

from .harness import Result

SUITES = ("memory", "redis", "redlock", "zookeeper", "etcd", "guards")


async def main_async(suites: list[str], duration: float) -> tuple[list[Result], dict[str, Any]]:
    results: list[Result] = []
    env: dict[str, Any] = {
        "lockkit": lockkit.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "duration_s": duration,
        "servers": {},
    }
    for suite in suites:
        module = importlib.import_module(f"benchmarks.{suite}")
        suite_results = await module.run(duration)
        results.extend(suite_results)
        if hasattr(module, "server_versions"):
            env["servers"].update(module.server_versions())
    return results, env


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--suites", default=",".join(SUITES))
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--quick", action="store_true", help="short measurements (0.5 s each)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if args.quick:
        args.duration = min(args.duration, 0.5)
    suites = [s for s in args.suites.split(",") if s]
    results, env = anyio.run(main_async, suites, args.duration)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"env": env, "results": [r.as_dict() for r in results]}, indent=2))
    console = Console()
    if console.width < 160:  # a pipe or a narrow terminal: keep the figures readable
        console = Console(width=160)
    table = Table(title=f"lockkit benchmarks ({env['python']}, {env['cpus']} CPUs)")
    table.add_column("suite")
    table.add_column("measurement")
    table.add_column("figures")
    table.add_column("notes")
    for r in results:
        figures = ", ".join(
            f"{k}={v:,.3f}" if abs(v) < 100 else f"{k}={v:,.0f}" for k, v in r.figures.items()
        )
        table.add_row(r.suite, r.name, figures, ("FAILED: " if r.failed else "") + r.notes)
    console.print(table)
    console.print(f"JSON: {path}")
    failed = [r for r in results if r.failed]
    if failed:
        console.print(f"{len(failed)} measurement(s) failed: " + "; ".join(r.name for r in failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
