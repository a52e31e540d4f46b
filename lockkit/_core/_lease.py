"""Leases: the local view of a hold, its safe deadline, renewal and loss.

A :class:`Lease` is the holder's knowledge of one acquisition. It is *safe* until
``safe_deadline = started + ttl - drift``, where ``started`` is the clock reading taken
before the request that granted (or last renewed) the hold was sent, so a slow reply
only makes the holder more careful. Past the safe deadline with no confirmed renewal,
or on a definite "not the owner" from the server, the lease is lost and everyone
registered with :meth:`Lease.on_lost` is told.

The :class:`Watchdog` renews every lease of one client from a single task: it sleeps
until the earliest renewal or deadline, renews everything due (and everything nearly
due, so that renewals are batched) with one :meth:`Backend.extend_many` call, and
declares leases lost when their safe deadline passes.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, final

import anyio

from ._backend import Renewal
from ._clock import Clock
from ._events import DEADLINE_PASSED, Listener, RenewProbe, fields
from ._token import FencingToken

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._backend import Backend
    from ._events import Probe

__all__ = ("Lease", "LeaseState", "Watchdog")

logger = logging.getLogger("lockkit")

#: A lease is renewed after this fraction of its ttl.
RENEW_FRACTION = 1 / 3
#: Leases due within this fraction of their ttl join an earlier renewal batch.
COALESCE_FRACTION = 1 / 6
#: With nothing to watch the loop still wakes this often, so that adding a lease with
#: a long ttl does not need to wake it.
IDLE_WAKE = 5.0
#: After a failed renewal, retry after this fraction of the ttl (at most 1 s).
RETRY_FRACTION = 1 / 10


class LeaseState(enum.Enum):
    """Where a lease stands.

    .. versionadded:: 0.1
    """

    #: Held, and the last renewal (or the acquisition) was confirmed.
    HELD = "held"
    #: A renewal failed without a definite answer; still inside the safe deadline.
    AT_RISK = "at_risk"
    #: The server said another owner (or none), or the safe deadline passed.
    LOST = "lost"
    #: Released by its holder.
    RELEASED = "released"


@final
class Lease:
    """The holder's view of one acquisition.

    .. versionadded:: 0.1
    """

    __slots__ = (
        "_callbacks",
        "_clock",
        "_lost_event",
        "drift_factor",
        "lost_reason",
        "probe",
        "renew",
        "renew_at",
        "renewing",
        "risk",
        "safe_deadline",
        "state",
        "token",
        "ttl",
    )

    def __init__(
        self,
        token: FencingToken,
        ttl: float,
        clock: Clock,
        started: float,
        drift_factor: float,
        *,
        renew: bool = True,
    ) -> None:
        self.token = token
        self.ttl = ttl
        self.drift_factor = drift_factor
        self._clock = clock
        self.state = LeaseState.HELD
        self.lost_reason: str | None = None
        #: why it is at risk, when a backend said (the loss reason if the deadline passes)
        self.risk: str | None = None
        #: Whether the watchdog renews it; it enforces the safe deadline either way.
        self.renew = renew
        self.renewing = False
        #: made by the first :meth:`on_lost` (most holds never register one)
        self._callbacks: list[Callable[[Lease], None]] | None = None
        self._lost_event: anyio.Event | None = None
        #: set while a listener follows this hold (see ._events)
        self.probe: Probe | None = None
        self.safe_deadline = 0.0
        self.renew_at = 0.0
        self.confirm(started)

    @property
    def drift(self) -> float:
        """Allowance for clock drift and processing delay: 1 % of ttl + 2 ms by default."""
        return self.ttl * self.drift_factor + 0.002

    def confirm(self, started: float, ttl: float | None = None) -> None:
        """Record a renewal the server confirmed; ``started`` is when it was sent."""
        if self.state in (LeaseState.LOST, LeaseState.RELEASED):
            return
        if ttl is not None:
            self.ttl = ttl
        self.safe_deadline = started + self.ttl - self.drift
        self.renew_at = started + self.ttl * RENEW_FRACTION
        self.state = LeaseState.HELD
        self.risk = None

    def remaining(self) -> float:
        """Seconds until the safe deadline; 0 once lost or released."""
        if self.state in (LeaseState.LOST, LeaseState.RELEASED):
            return 0.0
        return max(0.0, self.safe_deadline - self._clock.now())

    @property
    def held(self) -> bool:
        """True while the lease is held (including at risk) and inside its deadline."""
        return self.state in (LeaseState.HELD, LeaseState.AT_RISK) and self.remaining() > 0

    @property
    def lost(self) -> bool:
        return self.state is LeaseState.LOST

    def mark_at_risk(self) -> None:
        if self.state is LeaseState.HELD:
            self.state = LeaseState.AT_RISK

    def mark_lost(self, reason: str) -> None:
        """Declare the lease lost and run the loss callbacks (once)."""
        if self.state in (LeaseState.LOST, LeaseState.RELEASED):
            return
        self.state = LeaseState.LOST
        self.lost_reason = reason
        token = self.token
        logger.warning(
            "lock %r lost (token %d): %s",
            token.name,
            token,
            reason,
            extra=fields(token, reason=reason),
        )
        if (probe := self.probe) is not None:
            self.probe = None
            probe.hold_ended(reason)
        if self._lost_event is not None:
            self._lost_event.set()
        callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            callback(self)

    def mark_released(self) -> None:
        if self.state is not LeaseState.LOST:
            self.state = LeaseState.RELEASED
        self._callbacks = None
        if (probe := self.probe) is not None:
            self.probe = None
            probe.hold_ended(None)

    def on_lost(self, callback: Callable[[Lease], None]) -> None:
        """Call ``callback(lease)`` when the lease is lost (now, if it already is)."""
        if self.state is LeaseState.LOST:
            callback(self)
        elif self.state is not LeaseState.RELEASED:
            if self._callbacks is None:
                self._callbacks = [callback]
            else:
                self._callbacks.append(callback)

    async def wait_lost(self) -> None:
        """Return when the lease is lost. Never returns for a lease released in time."""
        if self.state is LeaseState.LOST:
            return
        if self._lost_event is None:
            self._lost_event = anyio.Event()
        await self._lost_event.wait()

    def __repr__(self) -> str:
        return (
            f"<Lease {self.token.name!r} token={int(self.token)} {self.state.value} "
            f"remaining={self.remaining():.3f}s>"
        )


@final
class Watchdog:
    """Renews the leases of one client and declares them lost when they run out."""

    def __init__(self, backend: Backend, clock: Clock, task_group: TaskGroup) -> None:
        self._backend = backend
        self._clock = clock
        self._tg = task_group
        # a dict, not a set: a compact table, about half the memory per held lease
        self._leases: dict[Lease, None] = {}
        self._wake = anyio.Event()
        self._next_wake = math.inf
        #: While True no renewal is sent (deadlines are still enforced). For tests.
        self.paused = False
        self.renewal_calls = 0
        #: renewals sent before this clock reading confirm nothing (see reconfirm)
        self._distrust_before = -math.inf
        #: who hears of renewals (the session's listener; see ._events)
        self.events: Listener | None = None

    def add(self, lease: Lease) -> None:
        self._leases[lease] = None
        # wake the loop only if this lease needs attention before its next wake-up
        if min(lease.renew_at if lease.renew else math.inf, lease.safe_deadline) < self._next_wake:
            self._poke()

    def reschedule(self, lease: Lease) -> None:
        """``lease`` was confirmed or changed outside the watchdog (``extend()``): wake
        the loop if it now needs attention before the loop's next wake-up."""
        if lease in self._leases:
            self.add(lease)

    def wake(self) -> None:
        """Wake the loop now (renewals were resumed)."""
        self._poke()

    def reconfirm(self, within: float, reason: str | None = None) -> None:
        """The server may have lost every lease granted so far (a failover): renew all
        of them now, and declare lost any that a renewal sent from now on has not
        confirmed within ``within`` seconds (with ``reason``, if given, as the loss
        reason). Renewals already in flight confirm nothing.
        """
        now = self._clock.now()
        self._distrust_before = now
        for lease in self._leases:
            if lease.state in (LeaseState.HELD, LeaseState.AT_RISK):
                lease.mark_at_risk()
                lease.risk = reason or lease.risk
                lease.safe_deadline = min(lease.safe_deadline, now + within)
                lease.renew_at = now
        self._poke()

    def discard(self, lease: Lease) -> None:
        self._leases.pop(lease, None)

    def __len__(self) -> int:
        return len(self._leases)

    def _poke(self) -> None:
        self._next_wake = -math.inf
        self._wake.set()

    async def run(self) -> None:
        """The watchdog loop; runs until cancelled with the client's task group."""
        while True:
            self._wake = anyio.Event()
            self._next_wake = next_wake = self._tick()
            await self._clock.wait(self._wake, next_wake)

    def _tick(self) -> float:
        now = self._clock.now()
        next_wake = now + IDLE_WAKE
        due: list[Lease] = []
        soon: list[Lease] = []
        for lease in list(self._leases):
            if lease.state not in (LeaseState.HELD, LeaseState.AT_RISK):
                self._leases.pop(lease, None)
                continue
            if now >= lease.safe_deadline:
                self._leases.pop(lease, None)
                lease.mark_lost(lease.risk or DEADLINE_PASSED)
                continue
            next_wake = min(next_wake, lease.safe_deadline)
            if lease.renewing or self.paused or not lease.renew:
                continue
            if lease.renew_at <= now:
                due.append(lease)
            elif lease.renew_at <= now + lease.ttl * COALESCE_FRACTION:
                soon.append(lease)
            else:
                next_wake = min(next_wake, lease.renew_at)
        if due:
            batch = due + soon
            for lease in batch:
                lease.renewing = True
            self._tg.start_soon(self._renew, batch)
        else:
            for lease in soon:
                next_wake = min(next_wake, lease.renew_at)
        return next_wake

    async def _renew(self, batch: list[Lease]) -> None:
        started = self._clock.now()
        renewals = [Renewal(lease.token.name, lease.token.owner, lease.ttl) for lease in batch]
        results: list[bool | BaseException]
        self.renewal_calls += 1
        probe = None if (events := self.events) is None else RenewProbe(events, batch, self._clock)
        try:
            limit = max(0.01, min(lease.safe_deadline for lease in batch) - started)
            with anyio.fail_after(limit):
                results = await self._backend.extend_many(renewals)
        except Exception as exc:
            results = [exc] * len(batch)
        finally:
            for lease in batch:
                lease.renewing = False
        if probe is not None:
            probe.ended(results)
        now = self._clock.now()
        for lease, result in zip(batch, results, strict=True):
            if lease not in self._leases:
                continue  # released meanwhile
            if result is True and started < self._distrust_before:
                lease.renew_at = now  # sent before a reconfirm: ask again
            elif result is True:
                lease.confirm(started)
            elif result is False:
                self._leases.pop(lease, None)
                lease.mark_lost("the server no longer names this holder as the owner")
            else:
                lease.mark_at_risk()
                retry = 0.0 if started < self._distrust_before else lease.ttl * RETRY_FRACTION
                lease.renew_at = now + min(1.0, retry)
                logger.info(
                    "renewal of lock %r failed, retrying: %s",
                    lease.token.name,
                    result,
                    extra=fields(lease.token, error=str(result)),
                )
        self._poke()
