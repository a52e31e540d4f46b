"""The client: one backend, its watchdog, and the locks made from it."""

from __future__ import annotations

import contextlib
import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any, final

import anyio

from ._clock import Clock, MonotonicClock
from ._errors import ConfigurationError, LockError
from ._lease import Lease, Watchdog
from ._lock import Lock, OnLost
from ._names import validate_name, validate_timeout, validate_ttl
from ._registry import backend_class
from ._url import parse_url

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ..abc import Backend, LockInfo

__all__ = ("LockClient", "connect")

logger = logging.getLogger("lockkit")


def connect(
    url: str = "memory://",
    *,
    clock: Clock | None = None,
    default_ttl: float = 30.0,
    drift_factor: float = 0.01,
    **options: Any,
) -> LockClient:
    """Make a :class:`LockClient` for the backend that ``url`` names.

    Use it as ``async with lockkit.connect(url) as locks: ...``; the connection opens
    on entry and everything (renewals, held locks, connections) is closed on exit.

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
        ConfigurationError: unknown scheme, bad option, missing driver package.

    .. versionadded:: 0.1
    """
    parsed = parse_url(url)
    backend = backend_class(parsed.scheme).from_url(parsed, **options)
    return LockClient(backend, clock=clock, default_ttl=default_ttl, drift_factor=drift_factor)


@final
class LockClient:
    """Locks on one backend. Made by :func:`connect`, or from a backend instance
    (for example one built around the application's own Redis client).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock | None = None,
        default_ttl: float = 30.0,
        drift_factor: float = 0.01,
    ) -> None:
        self.backend = backend
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.default_ttl = validate_ttl(default_ttl, "default_ttl")
        if not 0 <= drift_factor < 0.5:
            raise ConfigurationError(f"drift_factor must be in [0, 0.5), got {drift_factor!r}")
        self.drift_factor = drift_factor
        self._held: set[Lock] = set()
        self._watchdog: Watchdog | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._open = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> LockClient:
        if self._open or self._closed:
            raise RuntimeError("a LockClient can be opened only once")
        async with contextlib.AsyncExitStack() as stack:
            await self.backend.aopen(self.clock)
            stack.push_async_callback(self._close_backend)
            tg: TaskGroup = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            stack.push_async_callback(self._release_all)
            self._watchdog = Watchdog(self.backend, self.clock, tg)
            tg.start_soon(self._watchdog.run, name="lockkit-watchdog")
            self._stack = stack.pop_all()
        self._open = True
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
        the backend (only what lockkit opened). Idempotent; the releases and the
        close run shielded from cancellation. Call it from the task that opened it."""
        if self._stack is None:
            self._closed = True
            return
        stack, self._stack = self._stack, None
        try:
            await stack.aclose()
        finally:
            self._open = False
            self._closed = True

    async def _close_backend(self) -> None:
        # no shield here: a backend may own a task group entered in aopen(); backends
        # shield their own network cleanup
        await self.backend.aclose()

    async def _release_all(self) -> None:
        for lock in list(self._held):
            for acq in list(lock._by_task.values()):
                try:
                    await lock._release(acq, lost_ok=True)
                except LockError as exc:
                    logger.warning("could not release lock %r on close: %s", lock.name, exc)

    def _require_open(self) -> Backend:
        if not self._open:
            state = "closed" if self._closed else "not open yet"
            raise RuntimeError(
                f"the LockClient is {state}: use it inside 'async with lockkit.connect(...)'"
            )
        return self.backend

    def _watch(self, lease: Lease) -> None:
        assert self._watchdog is not None
        self._watchdog.add(lease)

    def _unwatch(self, lease: Lease) -> None:
        if self._watchdog is not None:
            self._watchdog.discard(lease)

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
            self,
            validate_name(name),
            ttl=self.default_ttl if ttl is None else validate_ttl(ttl),
            timeout=validate_timeout(timeout),
            renew=renew,
            on_lost=on_lost,
        )

    async def inspect(self, name: str) -> LockInfo:
        """The server's view of lock ``name``: its holder and waiters."""
        return await self._require_open().inspect(validate_name(name))

    @property
    def held_count(self) -> int:
        """Leases this client currently renews."""
        return len(self._watchdog) if self._watchdog is not None else 0

    def __repr__(self) -> str:
        state = "open" if self._open else ("closed" if self._closed else "new")
        return f"<LockClient {self.backend!r} {state}>"
