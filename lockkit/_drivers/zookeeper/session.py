"""Following the aiozk session on behalf of the leases that ride on it.

aiozk keeps the session alive (heartbeats, reconnects) but only logs its loss.
:class:`SessionKeeper` watches it and tells the backend, through :class:`Leases`, what
the session means for the leases: at risk while the connection is down, lost past the
safe deadline (the server's last answer + session timeout x (1 - :data:`SESSION_MARGIN`))
or when aiozk replaced the expired session with another. It also wakes the backend when
a lease's ttl ends, and probes the server when it has been quiet for a third of the
session timeout, so that the safe deadline keeps moving while the connection is up.

The keeper knows nothing of lock nodes: which leases are held, what ending one means
and what each loss is called are the backend's.
"""

from __future__ import annotations

import logging
import math
from typing import Final, Protocol, final

import anyio

from ..._core._clock import Clock
from ..._core._errors import BackendUnavailable
from .link import Link

__all__ = ("SESSION_MARGIN", "Leases", "SessionKeeper")

logger = logging.getLogger("lockkit.zookeeper")

#: The session's safe deadline keeps this fraction of the session timeout in reserve.
SESSION_MARGIN: Final = 0.1


class Leases(Protocol):
    """What :class:`SessionKeeper` asks of the backend. Each call but :meth:`probe`
    returns at once (work it starts runs in the background)."""

    def held(self) -> bool:
        """Whether any lease is held."""
        ...

    def expire_due(self, now: float) -> float:
        """End the held leases whose ttl ended by ``now``; return the clock reading at
        which the next held lease's ttl ends (``math.inf`` if none)."""
        ...

    async def probe(self) -> None:
        """One request to the server (its answer moves :attr:`Link.last_ok`); raises
        :class:`~lockkit.BackendUnavailable` when there is none."""
        ...

    def at_risk(self, within: float) -> None:
        """The connection is down while leases are held: they are lost unless the server
        confirms them within ``within`` seconds (the safe deadline)."""
        ...

    def restored(self) -> None:
        """The connection is back after an outage (watches set before it may be gone)."""
        ...

    def deadline_passed(self) -> None:
        """The server has not answered by the safe deadline: every lease is lost."""
        ...

    def replaced(self) -> None:
        """The session expired and aiozk opened another: every node of the old session
        is gone (every lease held is lost, every waiter's place in a queue too)."""
        ...


@final
class SessionKeeper:
    """Follows ``link``'s session for ``leases`` while :meth:`run` runs.

    Args:
        link: the open link; the session it has now is the one the leases ride on.
        clock: the clock of every deadline (the link's).
        leases: the backend's side.
    """

    def __init__(self, link: Link, clock: Clock, leases: Leases) -> None:
        self._link = link
        self._clock = clock
        self._leases = leases
        self._session_id = link.session.session_id
        self._poke = anyio.Event()
        self._next_wake = -math.inf

    def look_by(self, when: float) -> None:
        """A lease now ends at ``when``: look again by then if the keeper sleeps longer."""
        if when < self._next_wake:
            self._poke.set()

    async def run(self) -> None:
        """Follows the session: leases at risk while disconnected, lost past the safe
        deadline or when the session was replaced; leases past their ttl ended; a probe
        when the server has not answered for a third of the session timeout."""
        link = self._link
        leases = self._leases
        outage = False
        while True:
            self._poke = poke = anyio.Event()
            cancel = link.on_change(poke.set)
            try:
                link.notice_closed_connection()
                now = self._clock.now()
                span = link.session.timeout
                deadline = link.last_ok + span * (1 - SESSION_MARGIN)
                held = leases.held()
                current = link.session.session_id
                if current != self._session_id and current is not None:
                    self._session_id = current
                    leases.replaced()
                    held = False
                if not link.connected:
                    if not outage and held:
                        leases.at_risk(max(0.0, deadline - now))
                    outage = True
                elif outage:
                    outage = False
                    leases.restored()
                if held and now >= deadline:
                    leases.deadline_passed()
                    held = False
                wake = math.inf
                if held:
                    wake = leases.expire_due(now)
                    probe_at = link.last_ok + span / 3
                    if probe_at <= now and link.connected:
                        await self._probe(deadline)
                        continue
                    wake = min(wake, deadline, probe_at)
                self._next_wake = wake
                await self._clock.wait(poke, wake)
            finally:
                cancel()

    async def _probe(self, deadline: float) -> None:
        with anyio.move_on_after(max(0.01, deadline - self._clock.now())):
            try:
                await self._leases.probe()
            except BackendUnavailable as exc:
                logger.info("ZooKeeper probe failed: %s", exc)
                await anyio.sleep(min(1.0, self._link.session.timeout / 10))
