"""The ``lockkit`` command line: ``demo``, ``inspect``, ``version``."""

from __future__ import annotations

import sys
from typing import Any

try:
    import click
    from rich.console import Console
    from rich.table import Table
except ModuleNotFoundError as exc:  # pragma: no cover - the cli extra is missing
    sys.stderr.write(f"the lockkit command line needs {exc.name!r}: pip install 'lockkit[cli]'\n")
    raise SystemExit(2) from None

import anyio

import lockkit

from ._core._errors import LockError

__all__ = ("main",)

console = Console()


@click.group()
@click.version_option(lockkit.__version__, prog_name="lockkit")
def cli() -> None:
    """lockkit: distributed locks with fencing tokens."""


@cli.command()
@click.option("--url", default="memory://", show_default=True, help="Backend URL.")
@click.option("--workers", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--stock", default=12, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--ttl", default=0.5, show_default=True, type=click.FloatRange(0.05, 60))
def demo(url: str, workers: int, stock: int, ttl: float) -> None:
    """Buyers share one stock counter; a stalled holder's stale write is refused."""
    from ._demo import run_demo

    try:
        report = anyio.run(lambda: run_demo(url, workers=workers, stock=stock, ttl=ttl))
    except LockError as exc:
        raise click.ClickException(str(exc)) from exc
    table = Table(title=f"lockkit demo on {lockkit.parse_url(report.url)}")
    for col, just in (("t (s)", "right"), ("who", "left"), ("what", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    table.add_column("token", justify="right")
    table.add_column("stock", justify="right")
    styles = {"ok": "", "warn": "yellow", "refused": "bold red", "info": "cyan"}
    for e in report.events:
        table.add_row(
            f"{e.at:.3f}",
            e.worker,
            e.what,
            "" if e.token is None else str(e.token),
            "" if e.stock is None else str(e.stock),
            style=styles[e.kind],
        )
    console.print(table)
    checks: list[tuple[str, bool]] = [
        (
            f"no oversell: stock never below zero (final {report.final_stock})",
            report.final_stock >= 0,
        ),
        (
            f"sold {report.sold} + left {report.final_stock} == initial {report.initial_stock}",
            report.sold + report.final_stock == report.initial_stock,
        ),
        (f"stale writes accepted: {report.stale_accepted}", report.stale_accepted == 0),
        (f"stale writes refused by the guard: {report.stale_refused}", report.stale_refused >= 1),
        (
            f"lease losses reported to the holder: {report.losses_reported}",
            report.losses_reported >= 1,
        ),
    ]
    for text, ok in checks:
        console.print(("[green]PASS[/] " if ok else "[red]FAIL[/] ") + text)
    if not all(ok for _, ok in checks):
        raise SystemExit(1)


@cli.command()
@click.argument("name")
@click.option("--url", required=True, help="Backend URL.")
def inspect(name: str, url: str) -> None:
    """Show the holder and waiters of lock NAME."""

    async def run() -> Any:
        async with lockkit.connect(url) as locks:
            return await locks.inspect(name)

    try:
        info = anyio.run(run)
    except LockError as exc:
        raise click.ClickException(str(exc)) from exc
    if info.holder is None:
        console.print(f"{name!r}: free, {info.waiters} waiting")
    else:
        h = info.holder
        left = "unknown" if h.expires_in is None else f"{h.expires_in:.3f}s"
        console.print(
            f"{name!r}: held by {h.owner[:12]}… token {h.token}, {left} left, "
            f"{info.waiters} waiting"
        )


def main() -> None:
    """Entry point of the ``lockkit`` script."""
    cli()
