"""What instrumentation costs on the uncontended memory:// cycle, all in one run.

Rates are cycles per second of the event loop thread's CPU time, so that other work on
the machine does not count.

python -m benchmarks.otel [--duration 2] [--quick]   (or: python -m benchmarks --suites otel)

Four variants of the same acquire + release cycle, each on its own open client, measured
in short slices taken in turn (the order rotates every round) so that drift of the
machine's speed hits them alike:

* ``stripped``: the core with its instrumentation hooks compiled out. The methods that
  carry hooks (``Holds.take``, ``Holds.release``, ``Lease.__init__``,
  ``Lease.mark_released``, ``Lease.mark_lost``) are recompiled from their own source
  with every hook statement removed (``if probe/events is not None: ...`` and the
  assignments of ``probe``/``events``), and swapped in for this variant's slices only.
  That is the code as it would be without the seam, and the reference;
* ``no listener``: the shipped code with nothing listening (OpenTelemetry not
  instrumented, or not installed), the path every user who does not ask for telemetry
  takes;
* ``otel no-op``: ``lockkit.integrations.otel.instrument(client)`` with only the API's
  default (no-op) providers;
* ``otel sdk``: instrumented with an SDK tracer provider (batch processor, spans
  discarded by the exporter) and an SDK meter provider (in-memory reader).

The goal: ``no listener`` within 2 % of ``stripped`` (median of per-round ratios).
"""

from __future__ import annotations
import __future__

import argparse
import ast
import inspect
import statistics
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import anyio

import lockkit
from lockkit._core import _hold, _lease

from .harness import Result, check, show

#: The methods that carry hooks, and how many hook statements each must lose.
HOOKED: tuple[tuple[type, str, int], ...] = (
    (_hold.Holds, "take", 3),
    (_hold.Holds, "release", 4),
    (_lease.Lease, "__init__", 1),
    (_lease.Lease, "mark_released", 1),
    (_lease.Lease, "mark_lost", 1),
)
HOOK_NAMES = frozenset({"probe", "events"})


def _names_a_hook(node: ast.expr) -> bool:
    if isinstance(node, ast.NamedExpr):
        node = node.target
    if isinstance(node, ast.Name):
        return node.id in HOOK_NAMES
    return isinstance(node, ast.Attribute) and node.attr in HOOK_NAMES


class _StripHooks(ast.NodeTransformer):
    """Drops ``if <hook> is not None: ...`` and assignments to a hook name."""

    def __init__(self) -> None:
        self.removed = 0

    def _keep(self, stmt: ast.stmt) -> bool:
        if isinstance(stmt, ast.If) and not stmt.orelse:
            test = stmt.test
            if (
                isinstance(test, ast.Compare)
                and len(test.ops) == 1
                and isinstance(test.ops[0], ast.IsNot)
                and isinstance(test.comparators[0], ast.Constant)
                and test.comparators[0].value is None
                and _names_a_hook(test.left)
            ):
                return False
        if isinstance(stmt, ast.Assign | ast.AnnAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if all(_names_a_hook(t) for t in targets):
                return False
        return True

    def generic_visit(self, node: ast.AST) -> ast.AST:
        for field in ("body", "orelse", "finalbody", "handlers"):
            stmts = getattr(node, field, None)
            if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt):
                kept = [s for s in stmts if self._keep(s)]
                self.removed += len(stmts) - len(kept)
                setattr(node, field, kept or [ast.Pass()])
        return super().generic_visit(node)


def stripped(owner: type, name: str, expected: int) -> Callable[..., Any]:
    """``owner.name`` recompiled from its source without its hook statements."""
    func = getattr(owner, name)
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    stripper = _StripHooks()
    tree = ast.fix_missing_locations(stripper.visit(tree))
    if stripper.removed != expected:
        raise RuntimeError(f"{owner.__name__}.{name}: {stripper.removed} hooks, not {expected}")
    left = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} & HOOK_NAMES
    if left:
        raise RuntimeError(f"{owner.__name__}.{name} still names {sorted(left)}")
    flags = __future__.annotations.compiler_flag
    code = compile(tree, f"<{owner.__name__}.{name} without hooks>", "exec", flags=flags)
    namespace = dict(func.__globals__)
    exec(code, namespace)
    new: Callable[..., Any] = namespace[name]
    new.__qualname__ = func.__qualname__
    return new


async def rate(step: Callable[[], Any], duration: float) -> float:
    """Calls of ``step`` per second of this thread's CPU time, for ``duration`` seconds of
    wall time: other processes on a busy machine take wall time, not this thread's CPU."""
    for _ in range(50):
        await step()
    count = 0
    cpu_start = time.thread_time()
    deadline = time.perf_counter() + duration
    while time.perf_counter() < deadline:
        for _ in range(20):
            await step()
        count += 20
    return count / (time.thread_time() - cpu_start)


@contextmanager
def hooks_compiled_out(
    replacements: Sequence[tuple[type, str, Callable[..., Any]]],
) -> Iterator[None]:
    originals = [(owner, name, owner.__dict__[name]) for owner, name, _ in replacements]
    for owner, name, new in replacements:
        setattr(owner, name, new)
    try:
        yield
    finally:
        for owner, name, old in originals:
            setattr(owner, name, old)


def _sdk_providers() -> tuple[Any, Any, Callable[[], None]]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    # exported as each span ends, on the loop: no background thread to slow the slices
    # of the other variants
    tracer_provider.add_span_processor(SimpleSpanProcessor(Discard()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])

    def shutdown() -> None:
        tracer_provider.shutdown()
        meter_provider.shutdown()

    return tracer_provider, meter_provider, shutdown


async def run(duration: float) -> list[Result]:
    from lockkit.integrations import otel

    replacements = [(owner, name, stripped(owner, name, n)) for owner, name, n in HOOKED]
    tracer_provider, meter_provider, shutdown = _sdk_providers()
    variants = ("stripped", "no listener", "otel no-op", "otel sdk")
    slice_s = 0.1
    rounds = max(10, round(duration * 10))
    rates: dict[str, list[float]] = {v: [] for v in variants}
    try:
        async with (
            lockkit.connect("memory://") as plain,
            lockkit.connect("memory://") as noop,
            lockkit.connect("memory://") as sdk,
        ):
            otel.instrument(noop)
            otel.instrument(sdk, tracer_provider=tracer_provider, meter_provider=meter_provider)
            clients = {"stripped": plain, "no listener": plain, "otel no-op": noop, "otel sdk": sdk}
            locks = {v: clients[v].lock(f"bench:otel:{v}", ttl=30) for v in variants}

            def cycle_of(lock: lockkit.Lock) -> Callable[[], Any]:
                async def cycle() -> None:
                    await lock.acquire()
                    await lock.release()

                return cycle

            for r in range(rounds):
                # the pair that decides the goal side by side, in alternating order
                pair = ("stripped", "no listener")
                order = (pair if r % 2 else pair[::-1]) + (
                    variants[2:] if r % 4 < 2 else variants[:1:-1]
                )
                for variant in order:
                    cycle = cycle_of(locks[variant])
                    if variant == "stripped":
                        with hooks_compiled_out(replacements):
                            rates[variant].append(await rate(cycle, slice_s))
                    else:
                        rates[variant].append(await rate(cycle, slice_s))
    finally:
        shutdown()

    def ratios(variant: str, against: str) -> list[float]:
        """Per round, the extra time per cycle of ``variant``, in percent."""
        return [(b / a - 1) * 100 for a, b in zip(rates[variant], rates[against], strict=True)]

    def overhead(variant: str, against: str) -> float:
        return statistics.median(ratios(variant, against))

    absent = overhead("no listener", "stripped")
    q1, _, q3 = statistics.quantiles(ratios("no listener", "stripped"), n=4)
    results = [
        Result(
            "otel",
            f"memory:// uncontended cycle, {variant}",
            {
                "cycles_per_s": statistics.median(rates[variant]),
                "us_per_cycle": 1e6 / statistics.median(rates[variant]),
            },
        )
        for variant in variants
    ]
    results.append(
        Result(
            "otel",
            "instrumentation overhead, % of the cycle (median of per-round ratios)",
            {
                "absent_vs_stripped": absent,
                "absent_vs_stripped_q1": q1,
                "absent_vs_stripped_q3": q3,
                "otel_noop_vs_absent": overhead("otel no-op", "no listener"),
                "otel_sdk_vs_absent": overhead("otel sdk", "no listener"),
                "rounds": float(rounds),
            },
            notes=check("overhead with OTel absent, %", absent, 2, at_most=True),
        )
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.otel")
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    duration = min(args.duration, 0.5) if args.quick else args.duration
    print(f"python {sys.version.split()[0]}, lockkit {lockkit.__version__}")
    for result in anyio.run(run, duration):
        print(
            f"{result.name}: {show(result.figures)}"
            + (f"  [{result.notes}]" if result.notes else "")
        )


if __name__ == "__main__":
    main()
