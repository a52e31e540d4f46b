"""OpenTelemetry traces and metrics for lockkit (``pip install 'lockkit[otel]'``).

.. code-block:: python

    from lockkit.integrations import otel

    otel.instrument()              # every client, through the global providers
    otel.instrument(locks)         # or one client
    otel.instrument(tracer_provider=tp, meter_provider=mp)   # or explicit providers

Only ``opentelemetry-api`` is needed: with no SDK configured the global providers are
no-ops. Spans:

* ``lockkit.acquire``: from the request to the grant (or timeout, error, cancellation).
  Attributes ``lockkit.lock.name``, ``lockkit.backend``, ``lockkit.owner`` (the first 12
  characters of the acquisition's id), ``lockkit.acquire.outcome`` (``acquired``,
  ``timeout``, ``cancelled``, ``error``), ``lockkit.acquire.wait_seconds``,
  ``lockkit.acquire.queued`` and ``lockkit.acquire.position`` (1 = next in line, when
  the backend knows), ``lockkit.token`` once granted; an event ``lockkit.queued``.
* ``lockkit.hold``: from the grant to the release or the loss, a sibling of the acquire
  span. On loss its status is ERROR and an event ``lockkit.lost`` carries
  ``lockkit.loss.reason`` and ``lockkit.loss.kind``.
* ``lockkit.release``: the release request, a child of the hold span;
  ``lockkit.release.outcome`` is ``released``, ``not_owner``, ``unavailable`` (retried in
  the background) or ``cancelled``.
* ``lockkit.renew``: one renewal batch (a root span, linked to the hold spans it renews):
  ``lockkit.renew.batch_size``, ``lockkit.renew.renewed``, ``.not_owner``, ``.failed``.

Metrics (attributes are bounded: the backend kind and an outcome, never the lock name):
``lockkit.acquire.wait`` (histogram, s; by outcome), ``lockkit.holds`` (up-down counter),
``lockkit.hold.duration`` (histogram, s), ``lockkit.losses`` (counter; by
``lockkit.loss.kind``: ``not_owner``, ``deadline``, ``closed``, ``backend``),
``lockkit.renewals`` (counter, one per lease; by ``lockkit.renew.outcome``),
``lockkit.backend.requests`` (observable counter of round trips, by request kind, from
``BackendStatistics.requests``).

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from typing import Any, final

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Link, Span, Status, StatusCode

from lockkit import __version__
from lockkit._core import _events
from lockkit._core._client import LockClient
from lockkit._core._events import Listener, Probe, RenewProbe, loss_kind

__all__ = ("Telemetry", "instrument", "uninstrument")

logger = logging.getLogger("lockkit")

_SCOPE = "lockkit"


@final
class _Spans:
    __slots__ = ("acquire", "hold", "release")

    def __init__(self, acquire: Span) -> None:
        self.acquire = acquire
        self.hold: Span | None = None
        self.release: Span | None = None


@final
class Telemetry(Listener):
    """The listener :func:`instrument` installs: spans and metrics for lockkit events.

    Args:
        tracer_provider: defaults to the global one (``opentelemetry.trace``).
        meter_provider: defaults to the global one (``opentelemetry.metrics``).
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider=meter_provider)
        self._wait = meter.create_histogram(
            "lockkit.acquire.wait", unit="s", description="Time from acquire() to its outcome"
        )
        self._holds = meter.create_up_down_counter(
            "lockkit.holds", unit="{hold}", description="Locks held now"
        )
        self._hold_duration = meter.create_histogram(
            "lockkit.hold.duration", unit="s", description="Time from grant to release or loss"
        )
        self._losses = meter.create_counter(
            "lockkit.losses", unit="{loss}", description="Leases lost while held"
        )
        self._renewals = meter.create_counter(
            "lockkit.renewals", unit="{renewal}", description="Lease renewals, by outcome"
        )
        #: requests counted so far, by (backend, request kind); and per client, what of
        #: its counts is already in there
        self._requests: dict[tuple[str, str], int] = {}
        self._seen: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()
        meter.create_observable_counter(
            "lockkit.backend.requests",
            callbacks=[self._observe_requests],
            unit="{request}",
            description="Round trips to the lock store, by request kind",
        )

    # -- acquire / hold / release -----------------------------------------------------

    def acquire_started(self, probe: Probe) -> None:
        span = self._tracer.start_span(
            "lockkit.acquire",
            attributes={
                "lockkit.lock.name": probe.name,
                "lockkit.backend": probe.backend,
                "lockkit.owner": probe.owner[:12],
            },
        )
        if span.is_recording():  # else (a no-op provider, not sampled) no span of its hold
            probe.data[self] = _Spans(span)

    def queued(self, probe: Probe) -> None:
        spans: _Spans | None = probe.data.get(self)
        if spans is None:
            return
        attributes: dict[str, Any] = {}
        if probe.position is not None:
            attributes["lockkit.acquire.position"] = probe.position
        spans.acquire.add_event("lockkit.queued", attributes)

    def acquire_ended(self, probe: Probe) -> None:
        self._wait.record(
            probe.wait, {"lockkit.backend": probe.backend, "lockkit.acquire.outcome": probe.outcome}
        )
        spans: _Spans | None = probe.data.get(self)
        if spans is None:
            return
        span = spans.acquire
        span.set_attribute("lockkit.acquire.outcome", probe.outcome or "error")
        span.set_attribute("lockkit.acquire.wait_seconds", probe.wait)
        span.set_attribute("lockkit.acquire.queued", probe.queued)
        if probe.position is not None:
            span.set_attribute("lockkit.acquire.position", probe.position)
        if probe.token is not None:
            span.set_attribute("lockkit.token", int(probe.token))
        elif probe.outcome == "timeout":
            span.set_status(Status(StatusCode.ERROR, "timed out"))
        elif probe.outcome == "error" and probe.error is not None:
            span.record_exception(probe.error)
            span.set_status(Status(StatusCode.ERROR, type(probe.error).__name__))
        span.end()

    def hold_started(self, probe: Probe) -> None:
        self._holds.add(1, {"lockkit.backend": probe.backend})
        spans: _Spans | None = probe.data.get(self)
        if spans is None or probe.token is None:
            return
        spans.hold = self._tracer.start_span(
            "lockkit.hold",
            attributes={
                "lockkit.lock.name": probe.name,
                "lockkit.backend": probe.backend,
                "lockkit.owner": probe.owner[:12],
                "lockkit.token": int(probe.token),
            },
        )

    def release_started(self, probe: Probe) -> None:
        spans: _Spans | None = probe.data.get(self)
        if spans is None or spans.hold is None:
            return
        spans.release = self._tracer.start_span(
            "lockkit.release",
            context=trace.set_span_in_context(spans.hold),
            attributes={"lockkit.lock.name": probe.name, "lockkit.backend": probe.backend},
        )

    def release_ended(self, probe: Probe) -> None:
        spans: _Spans | None = probe.data.get(self)
        if spans is None or spans.release is None:
            return
        span, spans.release = spans.release, None
        outcome = probe.release_outcome or "released"
        span.set_attribute("lockkit.release.outcome", outcome)
        if outcome in ("not_owner", "unavailable"):
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end()

    def hold_ended(self, probe: Probe) -> None:
        backend = probe.backend
        self._holds.add(-1, {"lockkit.backend": backend})
        held = probe.held
        self._hold_duration.record(held, {"lockkit.backend": backend})
        reason = probe.lost_reason
        kind = None if reason is None else loss_kind(reason)
        if kind is not None:
            self._losses.add(1, {"lockkit.backend": backend, "lockkit.loss.kind": kind})
        spans: _Spans | None = probe.data.pop(self, None)
        if spans is None or spans.hold is None:
            return
        span = spans.hold
        span.set_attribute("lockkit.hold.seconds", held)
        if reason is not None and kind is not None:
            span.add_event(
                "lockkit.lost", {"lockkit.loss.reason": reason, "lockkit.loss.kind": kind}
            )
            span.set_status(Status(StatusCode.ERROR, f"lock lost: {reason}"))
        span.end()

    # -- renewals ---------------------------------------------------------------------

    def renew_started(self, probe: RenewProbe) -> None:
        links = []
        for lease in probe.leases:
            spans: _Spans | None = None if lease.probe is None else lease.probe.data.get(self)
            if spans is not None and spans.hold is not None:
                links.append(Link(spans.hold.get_span_context()))
        backend = probe.leases[0].token.backend if probe.leases else ""
        probe.data[self] = self._tracer.start_span(
            "lockkit.renew",
            context=otel_context.Context(),  # a root: one batch serves many holds
            links=links,
            attributes={"lockkit.backend": backend, "lockkit.renew.batch_size": len(probe.leases)},
        )

    def renew_ended(self, probe: RenewProbe) -> None:
        backend = probe.leases[0].token.backend if probe.leases else ""
        for outcome in probe.outcomes:
            self._renewals.add(1, {"lockkit.backend": backend, "lockkit.renew.outcome": outcome})
        span: Span | None = probe.data.pop(self, None)
        if span is None:
            return
        counts = {o: probe.outcomes.count(o) for o in ("renewed", "not_owner", "error")}
        span.set_attribute("lockkit.renew.renewed", counts["renewed"])
        span.set_attribute("lockkit.renew.not_owner", counts["not_owner"])
        span.set_attribute("lockkit.renew.failed", counts["error"])
        span.set_attribute("lockkit.renew.latency_seconds", probe.latency)
        if counts["error"]:
            span.set_status(Status(StatusCode.ERROR, "renewal failed"))
        span.end()

    # -- backend round trips ----------------------------------------------------------

    def _collect(self, session: Any) -> None:
        """Add what ``session``'s backend counted since the last look."""
        backend = session.backend
        seen = self._seen.setdefault(session, {})
        for kind, count in backend.statistics().requests.items():
            delta = count - seen.get(kind, 0)
            if delta > 0:
                key = (backend.kind, kind)
                self._requests[key] = self._requests.get(key, 0) + delta
                seen[kind] = count

    def client_closed(self, session: Any) -> None:
        self._collect(session)
        self._seen.pop(session, None)

    def _observe_requests(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        for session in _events.open_sessions():
            if self in session.listeners:
                self._collect(session)
        return [
            metrics.Observation(count, {"lockkit.backend": backend, "lockkit.request": kind})
            for (backend, kind), count in self._requests.items()
        ]

    def __repr__(self) -> str:
        return "<lockkit OpenTelemetry listener>"


_global: Telemetry | None = None
#: one listener per pair of providers, so that instruments are made once per meter
_made: dict[tuple[int, int], tuple[Telemetry, object, object]] = {}


def _telemetry(
    tracer_provider: trace.TracerProvider | None, meter_provider: metrics.MeterProvider | None
) -> Telemetry:
    key = (id(tracer_provider), id(meter_provider))
    made = _made.get(key)
    if made is None:
        telemetry = Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
        made = _made[key] = (telemetry, tracer_provider, meter_provider)  # keeps ids valid
    return made[0]


def instrument(
    client: LockClient | None = None,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> Telemetry:
    """Trace and measure ``client``, or with no client every client in the process
    (open now or later). Providers default to the global ones. Returns the listener.

    Instrumenting everything twice keeps the first instrumentation (as OpenTelemetry's
    instrumentors do); call :func:`uninstrument` first to change providers.
    """
    global _global
    if client is None:
        if _global is not None:
            logger.debug("lockkit is already instrumented; keeping the first instrumentation")
            return _global
        _global = _telemetry(tracer_provider, meter_provider)
        _events.add_global(_global)
        return _global
    telemetry = _telemetry(tracer_provider, meter_provider)
    uninstrument(client)
    client.session.listen(telemetry)
    return telemetry


def uninstrument(client: LockClient | None = None) -> None:
    """Stop what :func:`instrument` started for ``client``, or the process-wide one."""
    global _global
    if client is None:
        if _global is not None:
            _events.remove_global(_global)
            _global = None
        return
    session = client.session
    for listener in session.own_listeners:
        if isinstance(listener, Telemetry):
            session.unlisten(listener)
