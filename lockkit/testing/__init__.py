"""Tools for testing code that uses lockkit, and for testing new backends.

* :class:`VirtualClock`: a clock that moves only when told, for timing logic
  without sleeps.
* :func:`pause_renewals`: stop a client's watchdog, to simulate a paused holder.
* :class:`FaultyBackend`: wraps a backend and fails, delays, hangs or loses replies
  per primitive, without a server.
* :class:`FaultProxy`: a TCP proxy that adds latency, holds, drops, resets or cuts
  the traffic between a client and a real server.
* :class:`Event`, :func:`read_history`, :func:`check_history`: a JSON-lines history of
  lock events from several processes, and the checker of what a lock promises over it.
* :func:`check_backend` and :data:`CHECKS`: the conformance suite every backend passes.
* :func:`check_guard` and :data:`GUARD_CHECKS`: the one every guard passes.

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._clock import VirtualClock as VirtualClock
from ._conformance import CHECKS as CHECKS
from ._conformance import ClientFactory as ClientFactory
from ._conformance import check_backend as check_backend
from ._conformance import pause_renewals as pause_renewals
from ._faults import FaultyBackend as FaultyBackend
from ._guards import GUARD_CHECKS as GUARD_CHECKS
from ._guards import GuardFactory as GuardFactory
from ._guards import check_guard as check_guard
from ._history import Event as Event
from ._history import HistoryReport as HistoryReport
from ._history import Violation as Violation
from ._history import check_history as check_history
from ._history import read_history as read_history
from ._proxy import Direction as Direction
from ._proxy import FaultProxy as FaultProxy

__all__ = (
    "CHECKS",
    "GUARD_CHECKS",
    "ClientFactory",
    "Direction",
    "Event",
    "FaultProxy",
    "FaultyBackend",
    "GuardFactory",
    "HistoryReport",
    "Violation",
    "VirtualClock",
    "check_backend",
    "check_guard",
    "check_history",
    "pause_renewals",
    "read_history",
)
