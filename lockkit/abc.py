"""The extension points of lockkit: :class:`Backend` and :class:`Guard`, and the records
they trade in.

A backend implements a handful of primitives (acquire with waiting, release, extend,
inspect, ping); :class:`lockkit.LockClient` builds locks, leases, the watchdog and the
``async with`` protocol on top, the way an httpx client sits on a transport. A guard is
the storage side of fencing: it refuses a write whose token is older than one it
already accepted for the same resource. :func:`lockkit.testing.check_backend` is the
conformance suite a new backend passes.

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._core._backend import Backend as Backend
from ._core._backend import BackendContext as BackendContext
from ._core._backend import BackendStatistics as BackendStatistics
from ._core._backend import Capability as Capability
from ._core._backend import Claim as Claim
from ._core._backend import CleanupQueue as CleanupQueue
from ._core._backend import Grant as Grant
from ._core._backend import HolderInfo as HolderInfo
from ._core._backend import LockInfo as LockInfo
from ._core._backend import OwnerRecord as OwnerRecord
from ._core._backend import Renewal as Renewal
from ._core._backend import WaiterInfo as WaiterInfo
from ._core._fence import Fence as Fence
from ._core._fence import Guard as Guard
from ._core._fence import GuardCapability as GuardCapability
from ._core._fence import Versioned as Versioned
from ._core._fence import check_fence as check_fence
from ._core._waiting import Cleanup as Cleanup

__all__ = (
    "Backend",
    "BackendContext",
    "BackendStatistics",
    "Capability",
    "Claim",
    "Cleanup",
    "CleanupQueue",
    "Fence",
    "Grant",
    "Guard",
    "GuardCapability",
    "HolderInfo",
    "LockInfo",
    "OwnerRecord",
    "Renewal",
    "Versioned",
    "WaiterInfo",
    "check_fence",
)

for _name in __all__:
    globals()[_name].__module__ = "lockkit.abc"
del _name
