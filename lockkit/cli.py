"""The ``lockkit`` command line.

``demo`` runs the inventory demo. The operator's commands look at (and, with
``release --force``, break) the locks a server holds:

* ``lockkit inspect NAME``: holder, token, ttl left, and the waiters in order, with who
  they are (host, pid, task, since: the owner record each acquisition stores);
* ``lockkit list [PREFIX]``: the names held or queued under a prefix;
* ``lockkit watch NAME``: follows a lock's changes live until Ctrl-C;
* ``lockkit release --force NAME``: breaks a lock (asks first unless ``--yes``) and
  prints the token it broke.

Every operator command takes ``--url`` (or ``LOCKKIT_URL``) and ``--json``. Errors are
one line on stderr and a non-zero exit code; a URL's password is never printed.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

try:
    import click
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
except ModuleNotFoundError as exc:  # pragma: no cover - the cli extra is missing
    sys.stderr.write(f"the lockkit command line needs {exc.name!r}: pip install 'lockkit[cli]'\n")
    raise SystemExit(2) from None

import anyio

import lockkit

from ._core._backend import Backend, Capability, HolderInfo, LockInfo, OwnerRecord, WaiterInfo
from ._core._errors import LockError
from ._core._names import validate_name

__all__ = ("main",)

T = TypeVar("T")

console = Console(highlight=False)

#: Locks ``lockkit list`` inspects one by one for its table; past that, names only.
LIST_DETAILS = 200


@click.group()
@click.version_option(lockkit.__version__, prog_name="lockkit")
def cli() -> None:
    """lockkit: distributed locks with fencing tokens."""


# -- shared plumbing ---------------------------------------------------------------------


def _url_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--url",
        envvar="LOCKKIT_URL",
        show_envvar=True,
        help="Backend URL, e.g. redis://localhost:6379/0 (default: $LOCKKIT_URL).",
    )(f)


def _json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)


class _Failed(click.ClickException):
    """One line on stderr, exit code 1, no traceback."""

    def show(self, file: Any = None) -> None:
        click.echo(f"lockkit: {self.message}", err=True)


def _redact(text: str, url: str) -> str:
    """``text`` without the URL's password, in case a driver's message quotes it."""
    try:
        password = lockkit.parse_url(url).password
    except Exception:
        password = None
    return text.replace(password, "***") if password else text


def _target(url: str | None, doing: str) -> str:
    """The URL to use; refuses a missing one and ``memory://`` with a clear line."""
    if not url:
        raise _Failed("no backend URL: give --url or set LOCKKIT_URL")
    try:
        parsed = lockkit.parse_url(url)
    except LockError as exc:
        raise _Failed(_redact(str(exc), url)) from None
    if parsed.scheme == "memory":
        raise _Failed(
            f"{parsed} is the embedded backend: its locks live inside each process that "
            f"uses it, so there is nothing to {doing} from outside. Give the URL of the "
            "server your services lock on (--url or LOCKKIT_URL)."
        )
    return url


def _run(url: str, what: Callable[[Backend], Awaitable[T]]) -> T:
    """Connect to ``url``, run ``what`` with the open backend, and turn every failure
    into one clear line."""

    async def run() -> T:
        async with lockkit.connect(url) as locks:
            return await what(locks.backend)

    try:
        return anyio.run(run)
    except click.ClickException:
        raise
    except LockError as exc:
        raise _Failed(_redact(str(exc), url)) from None
    except NotImplementedError as exc:
        raise _Failed(_redact(str(exc), url)) from None
    except Exception as exc:  # a driver's surprise: still one line
        raise _Failed(_redact(f"{type(exc).__name__}: {exc}", url)) from None


def _record_json(record: OwnerRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "host": record.host,
        "pid": record.pid,
        "task": record.task,
        "since": record.since,
        "version": record.version,
    }


def _holder_json(holder: HolderInfo | None) -> dict[str, Any] | None:
    if holder is None:
        return None
    return {
        "owner": holder.owner,
        "token": holder.token,
        "expires_in": holder.expires_in,
        "record": _record_json(holder.record),
    }


def _waiter_json(waiter: WaiterInfo) -> dict[str, Any]:
    return {
        "owner": waiter.owner,
        "sequence": waiter.sequence,
        "record": _record_json(waiter.record),
    }


def _info_json(info: LockInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "holder": _holder_json(info.holder),
        "waiters": info.waiters,
        "queue": [_waiter_json(w) for w in info.queue],
    }


def _print_json(data: object) -> None:
    click.echo(json.dumps(data, separators=(",", ":")))


def _since(at: float, now: float) -> str:
    when = datetime.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")
    return f"{when} ({max(0.0, now - at):.1f}s ago)"


def _who(record: OwnerRecord | None, now: float) -> str:
    if record is None:
        return "(no owner record)"
    task = f" task {record.task}" if record.task else ""
    return f"host {record.host} pid {record.pid}{task}, since {_since(record.since, now)}"


def _ttl(holder: HolderInfo) -> str:
    return "unknown" if holder.expires_in is None else f"{holder.expires_in:.3f}s"


def _print_info(info: LockInfo) -> None:
    now = time.time()
    name = escape(repr(info.name))
    if info.holder is None and info.waiters == 0:
        console.print(f"{name}: free (no holder, no waiter)")
        return
    h = info.holder
    if h is None:
        console.print(f"{name}: no holder (being handed over), {info.waiters} waiting")
    else:
        console.print(f"{name}: held by {escape(h.owner)}")
        console.print(f"  token     {h.token}")
        console.print(f"  ttl left  {_ttl(h)}")
        console.print(f"  who       {escape(_who(h.record, now))}")
        console.print(f"  waiting   {info.waiters}")
    if not info.queue:
        return
    table = Table(title=f"waiters of {name}, in order", title_justify="left")
    for col, just in (("#", "right"), ("owner", "left"), ("host", "left"), ("pid", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    table.add_column("task")
    table.add_column("since")
    for i, w in enumerate(info.queue, 1):
        r = w.record
        table.add_row(
            str(i),
            escape(w.owner),
            escape(r.host) if r else "?",
            str(r.pid) if r else "?",
            escape(r.task or "") if r else "",
            _since(r.since, now) if r else "",
        )
    console.print(table)
    if len(info.queue) < info.waiters:
        console.print(f"  ... and {info.waiters - len(info.queue)} more")


# -- commands ------------------------------------------------------------------------------


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


def _name(name: str) -> str:
    try:
        return validate_name(name)
    except LockError as exc:
        raise _Failed(str(exc)) from None


@cli.command()
@click.argument("name")
@_url_option
@_json_option
def inspect(name: str, url: str | None, as_json: bool) -> None:
    """Show the holder of lock NAME (token, ttl left, who) and its waiters in order."""
    name, url = _name(name), _target(url, "inspect")
    info = _run(url, lambda backend: backend.inspect(name))
    if as_json:
        _print_json(_info_json(info))
    else:
        _print_info(info)


@cli.command(name="list")
@click.argument("prefix", default="")
@_url_option
@_json_option
def list_(prefix: str, url: str | None, as_json: bool) -> None:
    """List the locks held or queued whose name starts with PREFIX (all without one)."""
    url = _target(url, "list")

    async def run(backend: Backend) -> tuple[list[str], list[LockInfo]]:
        if Capability.LIST not in backend.capabilities:
            raise _Failed(f"the {backend.kind} backend cannot list lock names")
        names = await backend.list_names(prefix)
        infos = [await backend.inspect(n) for n in names[:LIST_DETAILS]]
        return names, [i for i in infos if not i.idle]

    names, infos = _run(url, run)
    if len(names) <= LIST_DETAILS:  # a lock released meanwhile is left out
        names = [i.name for i in infos]
    if as_json:
        _print_json({"prefix": prefix, "names": names, "locks": [_info_json(i) for i in infos]})
        return
    under = f" under prefix {prefix!r}" if prefix else ""
    if not names:
        console.print(escape(f"no locks held or queued{under}"))
        return
    now = time.time()
    table = Table(title=escape(f"{len(names)} locks{under}"), title_justify="left")
    for col in ("name", "token", "ttl left", "waiting", "holder"):
        table.add_column(col, justify="right" if col in ("token", "waiting") else "left")
    for info in infos:
        h = info.holder
        table.add_row(
            escape(info.name),
            str(h.token) if h else "",
            _ttl(h) if h else "",
            str(info.waiters),
            escape(_who(h.record, now)) if h else "(none)",
        )
    console.print(table)
    if len(names) > len(infos):
        console.print(
            escape(f"... and {len(names) - len(infos)} more: {', '.join(names[len(infos) :])}")
        )


def _state(info: LockInfo) -> tuple[object, ...]:
    """What a change is: another holder or token, another queue."""
    holder = None if info.holder is None else (info.holder.owner, info.holder.token)
    return holder, info.waiters, tuple(w.owner for w in info.queue)


@cli.command()
@click.argument("name")
@_url_option
@_json_option
@click.option(
    "--interval",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0.05, 60),
    help="Seconds between looks.",
)
@click.option(
    "--duration",
    type=click.FloatRange(0, None),
    default=None,
    help="Stop after this many seconds (default: until Ctrl-C).",
)
def watch(
    name: str, url: str | None, as_json: bool, interval: float, duration: float | None
) -> None:
    """Follow lock NAME live: print its state now and at every change, until Ctrl-C.

    Looks every --interval seconds; where the backend can follow holders itself
    (observe), a holder change is shown at once.
    """
    name, url = _name(name), _target(url, "watch")

    def show(info: LockInfo) -> None:
        if as_json:
            _print_json({"at": time.time(), **_info_json(info)})
        else:
            stamp = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
            console.rule(f"{stamp}", align="left")
            _print_info(info)

    async def follow(backend: Backend) -> None:
        changed = anyio.Event()

        async def observe() -> None:
            nonlocal changed
            async for _ in backend.observe(name):
                changed.set()

        async with anyio.create_task_group() as tg:
            if Capability.OBSERVE in backend.capabilities:
                tg.start_soon(observe)
            last: tuple[object, ...] | None = None
            with anyio.move_on_after(duration if duration is not None else float("inf")):
                while True:
                    info = await backend.inspect(name)
                    state = _state(info)
                    if state != last:
                        show(info)
                        last = state
                    with anyio.move_on_after(interval):
                        await changed.wait()
                    changed = anyio.Event()
            tg.cancel_scope.cancel()

    try:
        _run(url, follow)
    except KeyboardInterrupt:  # Ctrl-C: the normal way out
        if not as_json:
            click.echo("", err=True)


@cli.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Required: this breaks a lock someone holds.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_url_option
@_json_option
def release(name: str, force: bool, yes: bool, url: str | None, as_json: bool) -> None:
    """Break lock NAME: its holder loses it (at its next renewal) and the next waiter
    gets it. Prints the token broken. Needs --force; asks first unless --yes."""
    if not force:
        raise _Failed(
            "release breaks a lock another process holds: say --force to mean it "
            "(a process releases its own locks by leaving `async with`)"
        )
    name, url = _name(name), _target(url, "release")

    async def run(backend: Backend) -> tuple[LockInfo, int | None]:
        if Capability.FORCE_RELEASE not in backend.capabilities:
            raise _Failed(f"the {backend.kind} backend cannot break locks")
        info = await backend.inspect(name)
        if info.holder is None:
            return info, None
        if not yes:
            h = info.holder
            question = (
                f"Break lock {name!r} held by {h.owner} (token {h.token}, "
                f"{_who(h.record, time.time())})?"
            )
            asked = await anyio.to_thread.run_sync(
                lambda: click.confirm(question, default=False, err=True)
            )
            if not asked:
                raise _Failed("not broken: the lock stays with its holder")
            now = await backend.inspect(name)
            if now.holder is None or now.holder.owner != h.owner:
                raise _Failed("not broken: the holder changed while asking; look again")
        return info, await backend.force_release(name)

    info, broken = _run(url, run)
    if as_json:
        _print_json({"name": name, "broken": broken, "holder": _holder_json(info.holder)})
    elif broken is None:
        console.print(escape(f"{name!r} is not held: nothing to break"))
    else:
        console.print(escape(f"{name!r}: broke the lock of token {broken}"))


def main() -> None:
    """Entry point of the ``lockkit`` script."""
    cli()
