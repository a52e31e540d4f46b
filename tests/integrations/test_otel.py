"""OpenTelemetry spans and metrics, read back with the SDK's in-memory exporter and
reader."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import lockkit
from lockkit import LockLostError, LockTimeout
from lockkit.integrations import otel
from lockkit.testing import VirtualClock, pause_renewals


class Telemetry:
    """An SDK tracer and meter provider whose output the test reads."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def instrument(self, client: lockkit.LockClient | None = None) -> otel.Telemetry:
        return otel.instrument(
            client, tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name in (None, s.name)]

    def span(self, name: str) -> ReadableSpan:
        [span] = self.spans(name)
        return span

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for m in scope.metrics
            if m.name == metric
            for point in m.data.data_points
        ]

    def value(self, metric: str, **attributes: Any) -> Any:
        """The sum (counters) or the point (histograms) whose attributes include these."""
        wanted = {f"lockkit.{k.replace('_', '.')}": v for k, v in attributes.items()}
        found = [
            p for p in self.points(metric) if wanted.items() <= dict(p.attributes or {}).items()
        ]
        assert len(found) == 1, (metric, wanted, [p.attributes for p in self.points(metric)])
        return found[0].value if hasattr(found[0], "value") else found[0]

    def close(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    yield t
    otel.uninstrument()
    t.close()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_acquire_hold_release_trace(telemetry: Telemetry, clock: VirtualClock) -> None:
    tracer = telemetry.tracer_provider.get_tracer("app")
    async with lockkit.connect("memory://", clock=clock) as locks:
        telemetry.instrument(locks)
        with tracer.start_as_current_span("request") as request:
            async with locks.lock("orders:42", ttl=30) as token:
                await clock.advance(2)
    acquire, hold, release = (
        telemetry.span(f"lockkit.{n}") for n in ("acquire", "hold", "release")
    )
    assert attrs(acquire) == {
        "lockkit.lock.name": "orders:42",
        "lockkit.backend": "memory",
        "lockkit.owner": token.owner[:12],
        "lockkit.acquire.outcome": "acquired",
        "lockkit.acquire.wait_seconds": 0.0,
        "lockkit.acquire.queued": False,
        "lockkit.token": int(token),
    }
    assert attrs(hold)["lockkit.token"] == int(token)
    assert attrs(hold)["lockkit.hold.seconds"] == 2.0
    assert attrs(release)["lockkit.release.outcome"] == "released"
    # acquire and hold belong to the caller's span; the release to the hold
    request_id = request.get_span_context().span_id
    assert acquire.parent is not None and acquire.parent.span_id == request_id
    assert hold.parent is not None and hold.parent.span_id == request_id
    assert release.parent is not None and release.parent.span_id == hold.context.span_id
    assert hold.status.status_code is StatusCode.UNSET
    assert token.owner not in str([attrs(s) for s in telemetry.spans()])
    assert telemetry.value("lockkit.holds", backend="memory") == 0
    assert telemetry.value("lockkit.hold.duration", backend="memory").sum == 2.0


async def test_a_timeout(telemetry: Telemetry, clock: VirtualClock) -> None:
    async with lockkit.connect("memory://", clock=clock) as locks:
        telemetry.instrument(locks)
        await locks.lock("job").acquire()

        async def waiter() -> None:
            with pytest.raises(LockTimeout):
                await locks.lock("job").acquire(timeout=5)

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await clock.advance(5)
        [_, timed_out] = telemetry.spans("lockkit.acquire")
        assert attrs(timed_out)["lockkit.acquire.outcome"] == "timeout"
        assert attrs(timed_out)["lockkit.acquire.wait_seconds"] == 5.0
        assert attrs(timed_out)["lockkit.acquire.queued"] is True
        assert attrs(timed_out)["lockkit.acquire.position"] == 1
        assert "lockkit.token" not in attrs(timed_out)
        assert timed_out.status.status_code is StatusCode.ERROR
        assert [e.name for e in timed_out.events] == ["lockkit.queued"]
        waits = telemetry.value("lockkit.acquire.wait", backend="memory", acquire_outcome="timeout")
        assert (waits.count, waits.sum) == (1, 5.0)
        assert telemetry.value("lockkit.holds", backend="memory") == 1


async def test_a_loss_puts_its_reason_on_the_hold_span(
    telemetry: Telemetry, clock: VirtualClock
) -> None:
    async with lockkit.connect("memory://", clock=clock) as locks:
        telemetry.instrument(locks)

        async def holder() -> None:
            with pytest.raises(LockLostError):
                async with locks.lock("job", ttl=30):
                    await anyio.sleep_forever()

        with pause_renewals(locks):
            async with anyio.create_task_group() as tg:
                tg.start_soon(holder)
                await clock.advance(30)
    hold = telemetry.span("lockkit.hold")
    assert hold.status.status_code is StatusCode.ERROR
    assert "safe deadline passed" in (hold.status.description or "")
    [lost] = hold.events
    assert lost.name == "lockkit.lost"
    assert dict(lost.attributes or {}) == {
        "lockkit.loss.reason": "the safe deadline passed without a confirmed renewal",
        "lockkit.loss.kind": "deadline",
    }
    assert telemetry.value("lockkit.losses", backend="memory", loss_kind="deadline") == 1
    assert telemetry.value("lockkit.holds", backend="memory") == 0


async def test_renewals(telemetry: Telemetry, clock: VirtualClock) -> None:
    async with lockkit.connect("memory://", clock=clock) as locks:
        telemetry.instrument(locks)
        async with locks.lock("a", ttl=30), locks.lock("b", ttl=30):
            await clock.advance(10)
            [renew] = telemetry.spans("lockkit.renew")
    assert renew.parent is None  # one batch serves many holds: linked, not nested
    assert {link.context.span_id for link in renew.links} == {
        s.context.span_id for s in telemetry.spans("lockkit.hold")
    }
    assert attrs(renew)["lockkit.renew.batch_size"] == 2
    assert attrs(renew)["lockkit.renew.renewed"] == 2
    assert attrs(renew)["lockkit.renew.failed"] == 0
    assert telemetry.value("lockkit.renewals", backend="memory", renew_outcome="renewed") == 2


async def test_wait_histogram(telemetry: Telemetry, clock: VirtualClock) -> None:
    async with lockkit.connect("memory://", clock=clock) as locks:
        telemetry.instrument(locks)
        first = locks.lock("job")
        await first.acquire()

        async def second() -> None:
            async with locks.lock("job"):
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            await clock.advance(3)
            await first.release()
    waits = telemetry.value("lockkit.acquire.wait", backend="memory", acquire_outcome="acquired")
    assert (waits.count, waits.sum, waits.max) == (2, 3.0, 3.0)


async def test_global_instrumentation_reaches_every_client(telemetry: Telemetry) -> None:
    async with lockkit.connect("memory://") as before:
        telemetry.instrument()
        assert telemetry.instrument() is otel.instrument()  # instrumenting twice: one listener
        async with lockkit.connect("memory://") as after:
            for locks in (before, after):
                async with locks.lock("job"):
                    pass
        otel.uninstrument()
        async with before.lock("job"):
            pass
    assert len(telemetry.spans("lockkit.hold")) == 2


async def test_the_global_providers_by_default(caplog: pytest.LogCaptureFixture) -> None:
    """With only the API, the global providers are no-ops: nothing breaks, nothing kept."""
    caplog.set_level(logging.WARNING, logger="lockkit")  # no DEBUG log listener either
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    async with lockkit.connect("memory://") as locks:
        otel.instrument(locks)
        async with locks.lock("job"):
            pass
        otel.uninstrument(locks)
        assert locks.session.events is None


def test_lockkit_imports_no_opentelemetry() -> None:
    code = "import sys, lockkit; print(any(m.startswith('opentelemetry') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.redis
async def test_on_redis(telemetry: Telemetry, redis_server: Any) -> None:
    async with lockkit.connect(redis_server.url) as locks:
        telemetry.instrument(locks)
        async with locks.lock("otel:redis", ttl=5) as token:
            pass
        acquire = telemetry.span("lockkit.acquire")
        assert attrs(acquire)["lockkit.backend"] == "redis"
        assert attrs(acquire)["lockkit.token"] == int(token)
        assert attrs(telemetry.span("lockkit.release"))["lockkit.release.outcome"] == "released"
        requests = {
            p.attributes["lockkit.request"]: p.value
            for p in telemetry.points("lockkit.backend.requests")
        }
        expected = dict(locks.statistics().backend.requests)
    assert requests == expected and sum(requests.values()) >= 2
