"""The client: one backend, its watchdog, and the locks made from it."""

from __future__ import annotations

import dataclasses
from types import TracebackType
from typing import Any, final

from ._backend import Backend, BackendStatistics, LockInfo
from ._clock import Clock, MonotonicClock
from ._errors import ConfigurationError
from ._hold import OnLost
from ._lock import Lock
from ._names import validate_name, validate_timeout, validate_ttl
from ._registry import backend_class
from ._session import Session
from ._url import parse_url

__all__ = ("ClientStatistics", "LockClient", "connect")


def connect(
    url: str = "memory://",
    *,
    clock: Clock | None = None,
    default_ttl: float = 30.0,
    drift_factor: float = 0.01,
    **options: Any,
) -> LockClient:
    """Make a :class:`LockClient` for the backend that ``url`` names.

    Use it as ``async with lockkit.connect(url) as locks: ...``. Entering connects
    and verifies the server with one round trip (credentials included), so a wrong
    password or a server that is down fails there, not at the first lock. Leaving
    releases what is still held and closes everything lockkit opened.

    Args:
        url: ``memory://``, ``redis://...`` and the other schemes in the README.
            Credentials may be in the URL; they never appear in a repr or a log.
        clock: the monotonic clock for deadlines (``lockkit.testing.VirtualClock``
            in tests).
        default_ttl: lease length of locks made without ``ttl=``.
        drift_factor: fraction of the ttl kept as a safety margin (plus 2 ms).
        **options: backend options; they override the URL's query string. Unknown
            names raise :class:`ConfigurationError`.

    Raises:
        ConfigurationError: unknown scheme, bad option, missing driver package (here);
            credentials refused (on entering).
        BackendUnavailable: the server cannot be reached (on entering).

    .. versionadded:: 0.1
    """
    parsed = parse_url(url)
    backend = backend_class(parsed.scheme).from_url(parsed, **options)
    return LockClient(backend, clock=clock, default_ttl=default_ttl, drift_factor=drift_factor)


@final
@dataclasses.dataclass(frozen=True, slots=True)
class ClientStatistics:
    """A snapshot of one :class:`LockClient`; does no I/O.

    .. versionadded:: 0.1
    """

    #: Leases the client holds and renews.
    held: int
    #: The backend's counters.
    backend: BackendStatistics


@final
class LockClient:
    """Locks on one backend. Made by :func:`connect`, or from a backend instance
    (for example one built around the application's own Redis client).

    .. versionadded:: 0.1
    """

    __slots__ = ("_session", "default_ttl")

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock | None = None,
        default_ttl: float = 30.0,
        drift_factor: float = 0.01,
    ) -> None:
        if not 0 <= drift_factor < 0.5:
            raise ConfigurationError(f"drift_factor must be in [0, 0.5), got {drift_factor!r}")
        self.default_ttl = validate_ttl(default_ttl, "default_ttl")
        self._session = Session(
            backend, clock if clock is not None else MonotonicClock(), drift_factor
        )

    @property
    def backend(self) -> Backend:
        return self._session.backend

    @property
    def clock(self) -> Clock:
        return self._session.clock

    @property
    def drift_factor(self) -> float:
        return self._session.drift_factor

    @property
    def session(self) -> Session:
        """The state every primitive of this client shares (for primitives and test
        tools such as :func:`lockkit.testing.pause_renewals`)."""
        return self._session

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> LockClient:
        await self._session.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release every lock still held through this client, stop renewing and close
        the backend (only what lockkit opened). Idempotent; runs shielded from
        cancellation and bounded in time. Call it from the task that opened it."""
        await self._session.aclose()

    async def ping(self) -> float:
        """One round trip to the server; returns its latency in seconds. For readiness
        probes.

        Raises:
            BackendUnavailable: the server did not answer.
            LockUsageError: the client is not open.
        """
        backend = self._session.require_open()
        started = self._session.clock.now()
        await backend.ping()
        return self._session.clock.now() - started

    # -- primitives ------------------------------------------------------------------

    def lock(
        self,
        name: str,
        *,
        ttl: float | None = None,
        timeout: float | None = None,
        renew: bool = True,
        on_lost: OnLost = "cancel",
    ) -> Lock:
        """A lock on ``name``. No I/O happens until it is acquired.

        Args:
            name: any non-empty text without control characters, up to 1024 UTF-8
                bytes; backends encode it so no two names collide.
            ttl: lease length in seconds (default: the client's ``default_ttl``).
                While held the watchdog renews it every ttl/3; a holder that dies
                frees the lock after at most ttl.
            timeout: how long ``acquire()`` waits: ``None`` forever, ``0`` one try.
            renew: renew the lease while held (default). ``False`` makes the hold end
                at ttl unless ``extend()`` is called.
            on_lost: ``"cancel"`` (default) cancels the body of ``async with`` when the
                lease is lost; ``"raise"`` lets it finish. Both raise
                :class:`LockLostError` on exit.

        Raises:
            InvalidLockName: bad name. ConfigurationError: bad ttl or timeout.
        """
        return Lock(
            self._session,
            validate_name(name),
            ttl=self.default_ttl if ttl is None else validate_ttl(ttl),
            timeout=validate_timeout(timeout),
            renew=renew,
            on_lost=on_lost,
        )

    async def inspect(self, name: str) -> LockInfo:
        """The server's view of lock ``name``: its holder and waiters."""
        return await self._session.require_open().inspect(validate_name(name))

    @property
    def held_count(self) -> int:
        """Leases this client currently renews."""
        watchdog = self._session.watchdog
        return len(watchdog) if watchdog is not None else 0

    def statistics(self) -> ClientStatistics:
        """Local counters: held leases and the backend's statistics. No I/O."""
        return ClientStatistics(self.held_count, self._session.backend.statistics())

    def __repr__(self) -> str:
        return f"<LockClient {self.backend!r} {self._session.state}>"
