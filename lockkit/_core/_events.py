"""The instrumentation seam: what the core tells tracing, metrics and logging.

The core reports a few moments of an acquisition's life and of the watchdog's work to
*listeners* (:class:`Listener`; :mod:`lockkit.integrations.otel` is one). Each report
sits behind one check of an attribute that is ``None`` while nothing listens
(``Session.events``, ``Watchdog.events``, ``Lease.probe``), so an uninstrumented client
pays an attribute load at each point and allocates nothing.

When something listens, each acquisition gets one :class:`Probe`, a record that follows
it from the request through the hold to its release or loss; listeners read its fields
and keep their own state in ``probe.data[listener]``. A renewal batch gets a
:class:`RenewProbe`. A listener that raises is logged and otherwise ignored: it never
breaks a lock.

Where listeners come from (:func:`combine`): the client's own (``Session.listen``),
the process-wide ones (:func:`add_global`), and :class:`LogListener` when the
``lockkit`` logger is enabled for DEBUG as the client opens.
"""

from __future__ import annotations

import contextvars
import logging
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, final

from ._errors import LockTimeout

if TYPE_CHECKING:
    from ._clock import Clock
    from ._lease import Lease
    from ._token import FencingToken

__all__ = (
    "Fanout",
    "Listener",
    "LogListener",
    "Probe",
    "RenewProbe",
    "add_global",
    "combine",
    "fields",
    "loss_kind",
    "queued",
    "remove_global",
)

logger = logging.getLogger("lockkit")

AcquireOutcome = Literal["acquired", "timeout", "cancelled", "error"]
ReleaseOutcome = Literal["released", "not_owner", "unavailable", "cancelled"]
RenewOutcome = Literal["renewed", "not_owner", "error"]

#: Loss reasons the core itself gives (anything else came from a backend: a failover,
#: an expired session).
NOT_OWNER = "the server no longer names this holder as the owner"
DEADLINE_PASSED = "the safe deadline passed without a confirmed renewal"
CLIENT_CLOSED = "the LockClient was closed while the lock was held"

_LOSS_KINDS = {NOT_OWNER: "not_owner", DEADLINE_PASSED: "deadline", CLIENT_CLOSED: "closed"}


def loss_kind(reason: str) -> str:
    """A loss reason as a short, bounded label for metrics: ``not_owner``, ``deadline``,
    ``closed``, or ``backend`` (a reason a backend gave, such as a failover)."""
    return _LOSS_KINDS.get(reason, "backend")


def fields(token: FencingToken, **more: object) -> dict[str, object]:
    """Structured log fields (``extra=``) for one acquisition. The owner id is cut to
    its first 12 characters, as in a token's repr: enough to tell acquisitions apart,
    not enough to act as the holder."""
    return {
        "lock": token.name,
        "token": int(token),
        "owner": token.owner[:12],
        "backend": token.backend,
        **more,
    }


class Listener:
    """Receives the core's reports; every method is a no-op here, override what you
    need. Called on the event loop, synchronously: do not block."""

    def acquire_started(self, probe: Probe) -> None:
        """``probe.name``, ``backend``, ``owner`` and ``started`` are set."""

    def queued(self, probe: Probe) -> None:
        """The acquisition joined the queue (``probe.position``: 1 is next, if known)."""

    def acquire_ended(self, probe: Probe) -> None:
        """``probe.outcome``, ``wait`` and, when acquired, ``token`` are set."""

    def hold_started(self, probe: Probe) -> None:
        """The lease begins (right after :meth:`acquire_ended` of a grant)."""

    def release_started(self, probe: Probe) -> None:
        """A release request is about to be sent."""

    def release_ended(self, probe: Probe) -> None:
        """``probe.release_outcome`` is set."""

    def hold_ended(self, probe: Probe) -> None:
        """The lease ended: ``probe.lost_reason`` is None for a release."""

    def renew_started(self, probe: RenewProbe) -> None:
        """A batch of renewals is about to be sent."""

    def renew_ended(self, probe: RenewProbe) -> None:
        """``probe.outcomes`` and ``latency`` are set."""

    def client_closed(self, session: Any) -> None:
        """A client that reported to this listener has closed (its backend's
        ``statistics()`` still answers)."""


def _dispatch(listener: Listener, method: str, probe: object) -> None:
    try:
        getattr(listener, method)(probe)
    except Exception:
        logger.exception("lockkit listener %r failed in %s", listener, method)


#: The probe of the acquisition the running task is making (for :func:`queued`).
_acquiring: contextvars.ContextVar[Probe | None] = contextvars.ContextVar(
    "lockkit_acquiring", default=None
)


def queued(position: int | None = None) -> None:
    """Called by a backend when the running task's acquisition joins the queue
    (``position``: 1 for next in line, when the backend knows). No-op unless listened."""
    probe = _acquiring.get()
    if probe is not None and not probe.queued:
        probe.queued = True
        probe.position = position
        _dispatch(probe.listener, "queued", probe)


@final
class Probe:
    """One acquisition, as listeners see it, from the request to the end of the hold."""

    __slots__ = (
        "_context",
        "backend",
        "clock",
        "data",
        "ended",
        "error",
        "granted",
        "listener",
        "lost_reason",
        "name",
        "outcome",
        "owner",
        "position",
        "queued",
        "release_outcome",
        "started",
        "token",
        "wait",
    )

    def __init__(self, listener: Listener, name: str, backend: str, owner: str, clock: Clock):
        self.listener = listener
        self.name = name
        self.backend = backend
        self.owner = owner
        self.clock = clock
        #: listener-private state, by listener
        self.data: dict[object, Any] = {}
        self.started = clock.now()
        self.queued = False
        self.position: int | None = None
        self.outcome: AcquireOutcome | None = None
        self.wait = 0.0
        self.error: BaseException | None = None
        self.token: FencingToken | None = None
        self.granted = 0.0
        self.ended = 0.0
        self.release_outcome: ReleaseOutcome | None = None
        self.lost_reason: str | None = None
        self._context = _acquiring.set(self)
        _dispatch(listener, "acquire_started", self)

    def _settle(self) -> None:
        self.wait = self.clock.now() - self.started
        try:
            _acquiring.reset(self._context)
        except ValueError:  # pragma: no cover - ended in another context
            _acquiring.set(None)

    def failed(self, error: BaseException) -> None:
        """The acquisition ended without a grant."""
        self._settle()
        self.error = error
        if isinstance(error, LockTimeout):
            self.outcome = "timeout"
        elif isinstance(error, Exception):
            self.outcome = "error"
        else:
            self.outcome = "cancelled"
        _dispatch(self.listener, "acquire_ended", self)

    def acquired(self, token: FencingToken, lease: Lease) -> None:
        """Granted: the hold begins; ``lease`` reports its end."""
        self._settle()
        self.outcome = "acquired"
        self.token = token
        self.granted = self.started + self.wait
        lease.probe = self
        _dispatch(self.listener, "acquire_ended", self)
        _dispatch(self.listener, "hold_started", self)

    def release_started(self) -> None:
        _dispatch(self.listener, "release_started", self)

    def release_ended(self, outcome: ReleaseOutcome) -> None:
        self.release_outcome = outcome
        _dispatch(self.listener, "release_ended", self)

    def hold_ended(self, lost_reason: str | None) -> None:
        """Called once by the lease: released (``None``) or lost (why)."""
        self.ended = self.clock.now()
        self.lost_reason = lost_reason
        _dispatch(self.listener, "hold_ended", self)

    @property
    def held(self) -> float:
        """Seconds from grant to the end of the hold (so far, if it goes on)."""
        return (self.ended or self.clock.now()) - self.granted


@final
class RenewProbe:
    """One renewal batch: one request for all its leases."""

    __slots__ = ("clock", "data", "latency", "leases", "listener", "outcomes", "started")

    def __init__(self, listener: Listener, leases: Sequence[Lease], clock: Clock) -> None:
        self.listener = listener
        self.leases = leases
        self.clock = clock
        self.data: dict[object, Any] = {}
        self.started = clock.now()
        self.latency = 0.0
        #: one per lease, in order
        self.outcomes: list[RenewOutcome] = []
        _dispatch(listener, "renew_started", self)

    def ended(self, results: Sequence[bool | BaseException]) -> None:
        self.latency = self.clock.now() - self.started
        self.outcomes = [
            "renewed" if r is True else "not_owner" if r is False else "error" for r in results
        ]
        _dispatch(self.listener, "renew_ended", self)


@final
class Fanout(Listener):
    """Several listeners as one."""

    def __init__(self, listeners: Sequence[Listener]) -> None:
        self.listeners = tuple(listeners)

    def __repr__(self) -> str:
        return f"Fanout({list(self.listeners)!r})"


def _fan_out(method: str) -> Any:
    def fan_out(self: Fanout, probe: object) -> None:
        for listener in self.listeners:
            _dispatch(listener, method, probe)

    fan_out.__name__ = method
    return fan_out


for _method in (
    "acquire_started",
    "queued",
    "acquire_ended",
    "hold_started",
    "release_started",
    "release_ended",
    "hold_ended",
    "renew_started",
    "renew_ended",
    "client_closed",
):
    setattr(Fanout, _method, _fan_out(_method))
del _method


@final
class LogListener(Listener):
    """DEBUG records on the ``lockkit`` logger, with :func:`fields` as ``extra``."""

    def queued(self, probe: Probe) -> None:
        logger.debug(
            "lock %r: waiting in line (position %s)",
            probe.name,
            "unknown" if probe.position is None else probe.position,
            extra={
                "lock": probe.name,
                "owner": probe.owner[:12],
                "backend": probe.backend,
                "position": probe.position,
            },
        )

    def acquire_ended(self, probe: Probe) -> None:
        more = {"wait_s": probe.wait, "queued": probe.queued, "position": probe.position}
        if probe.token is not None:
            logger.debug(
                "lock %r acquired (token %d) after %.3fs",
                probe.name,
                probe.token,
                probe.wait,
                extra=fields(probe.token, outcome="acquired", **more),
            )
            return
        logger.debug(
            "lock %r not acquired (%s) after %.3fs",
            probe.name,
            probe.outcome,
            probe.wait,
            extra={
                "lock": probe.name,
                "owner": probe.owner[:12],
                "backend": probe.backend,
                "outcome": probe.outcome,
                **more,
            },
        )

    def release_ended(self, probe: Probe) -> None:
        assert probe.token is not None
        logger.debug(
            "lock %r release (token %d): %s after %.3fs held",
            probe.name,
            probe.token,
            probe.release_outcome,
            probe.held,
            extra=fields(probe.token, outcome=probe.release_outcome, hold_s=probe.held),
        )

    def renew_ended(self, probe: RenewProbe) -> None:
        counts = {o: probe.outcomes.count(o) for o in ("renewed", "not_owner", "error")}
        logger.debug(
            "renewed %d of %d lease(s) in %.3fs",
            counts["renewed"],
            len(probe.outcomes),
            probe.latency,
            extra={
                "locks": [lease.token.name for lease in probe.leases],
                "batch": len(probe.leases),
                "latency_s": probe.latency,
                **counts,
            },
        )


_LOG = LogListener()


class _Session(Protocol):
    @property
    def listeners(self) -> tuple[Listener, ...]: ...

    def refresh_events(self) -> None: ...


_global: tuple[Listener, ...] = ()
_sessions: weakref.WeakSet[Any] = weakref.WeakSet()


def combine(own: Sequence[Listener]) -> Listener | None:
    """The one listener a client reports to: the process-wide ones, its own, and the
    log listener if the ``lockkit`` logger is enabled for DEBUG; None if there are none."""
    listeners = list(dict.fromkeys((*_global, *own)))
    if logger.isEnabledFor(logging.DEBUG):
        listeners.append(_LOG)
    if not listeners:
        return None
    return listeners[0] if len(listeners) == 1 else Fanout(listeners)


def register(session: _Session) -> None:
    """``session`` is open: it follows the process-wide listeners from now on."""
    _sessions.add(session)
    session.refresh_events()


def unregister(session: _Session) -> None:
    """``session`` has closed: its listeners hear of it once, and it is dropped."""
    if session in _sessions:
        _sessions.discard(session)
        for listener in session.listeners:
            _dispatch(listener, "client_closed", session)


def open_sessions() -> list[Any]:
    """The sessions open now (for listeners that read their statistics)."""
    return list(_sessions)


def add_global(listener: Listener) -> None:
    """Report every client's events to ``listener``, those open now included."""
    global _global
    if listener not in _global:
        _global = (*_global, listener)
    for session in list(_sessions):
        session.refresh_events()


def remove_global(listener: Listener) -> None:
    global _global
    _global = tuple(x for x in _global if x is not listener)
    for session in list(_sessions):
        session.refresh_events()


def global_listeners() -> tuple[Listener, ...]:
    return _global
