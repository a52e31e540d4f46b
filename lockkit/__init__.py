"""lockkit: asyncio-native distributed locks with fencing tokens.

.. code-block:: python

    async with lockkit.connect("redis://localhost:6379/0") as locks:
        async with locks.lock("orders:42", ttl=30, timeout=5) as token:
            await guard.write("orders:42", state, token=token)
"""

from __future__ import annotations

import logging as _logging
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from ._core._client import ClientStatistics as ClientStatistics
from ._core._client import LockClient as LockClient
from ._core._client import connect as connect
from ._core._clock import Clock as Clock
from ._core._clock import MonotonicClock as MonotonicClock
from ._core._errors import BackendUnavailable as BackendUnavailable
from ._core._errors import ConfigurationError as ConfigurationError
from ._core._errors import InvalidLockName as InvalidLockName
from ._core._errors import LockError as LockError
from ._core._errors import LockLostError as LockLostError
from ._core._errors import LockNotOwnedError as LockNotOwnedError
from ._core._errors import LockTimeout as LockTimeout
from ._core._errors import LockUsageError as LockUsageError
from ._core._errors import StaleTokenError as StaleTokenError
from ._core._errors import WriteConflictError as WriteConflictError
from ._core._lease import Lease as Lease
from ._core._lease import LeaseState as LeaseState
from ._core._lock import Lock as Lock
from ._core._lock import LockStatistics as LockStatistics
from ._core._token import FencingToken as FencingToken
from ._core._url import LockURL as LockURL
from ._core._url import parse_url as parse_url

try:
    __version__ = _version("lockkit")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = (
    "BackendUnavailable",
    "ClientStatistics",
    "Clock",
    "ConfigurationError",
    "FencingToken",
    "InvalidLockName",
    "Lease",
    "LeaseState",
    "Lock",
    "LockClient",
    "LockError",
    "LockLostError",
    "LockNotOwnedError",
    "LockStatistics",
    "LockTimeout",
    "LockURL",
    "LockUsageError",
    "MonotonicClock",
    "StaleTokenError",
    "WriteConflictError",
    "__version__",
    "connect",
    "parse_url",
)

_logging.getLogger("lockkit").addHandler(_logging.NullHandler())

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("lockkit._core"):
        _obj.__module__ = "lockkit"
del _name, _obj

del annotations  # the __future__ import is not part of the API
