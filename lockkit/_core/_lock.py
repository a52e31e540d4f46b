"""The lock object: ``async with client.lock(name) as token``."""

from __future__ import annotations

import dataclasses
from types import TracebackType
from typing import Any, final

from ._backend import LockInfo
from ._errors import ConfigurationError, LockNotOwnedError
from ._hold import Holds, OnLost
from ._lease import Lease
from ._names import validate_timeout, validate_ttl
from ._session import Session
from ._token import FencingToken

__all__ = ("Lock", "LockStatistics", "OnLost")


class _Default:
    """The lock's own setting (shown as such in signatures and help())."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<the lock's timeout>"


_DEFAULT: Any = _Default()


@final
@dataclasses.dataclass(frozen=True, slots=True)
class LockStatistics:
    """A snapshot of one :class:`Lock` object's local state.

    .. versionadded:: 0.1
    """

    name: str
    #: Acquisitions this object holds (one per task holding it).
    held: int
    #: Tasks of this object waiting in ``acquire()``.
    waiting: int


@final
class Lock:
    """A distributed lock on one name, made by :meth:`LockClient.lock`.

    ``async with lock as token`` acquires, yields the :class:`FencingToken`, renews the
    lease while the body runs and releases on exit. One ``Lock`` object may be shared by
    many tasks: each acquisition belongs to the task that made it, so tasks of one
    process exclude each other as processes do.

    Cancellation: a cancelled ``acquire()`` leaves nothing queued or held; a cancelled
    ``async with`` body still releases (shielded). Lease loss: see ``on_lost``; loss is
    never silent. Outage: calls raise :class:`BackendUnavailable`; a hold whose
    renewals fail is lost at its safe deadline.

    .. versionadded:: 0.1
    """

    __slots__ = ("_holds", "_session", "name", "on_lost", "renew", "timeout", "ttl")

    def __init__(
        self,
        session: Session,
        name: str,
        *,
        ttl: float,
        timeout: float | None,
        renew: bool,
        on_lost: OnLost,
    ) -> None:
        if on_lost not in ("cancel", "raise"):
            raise ConfigurationError(f"on_lost must be 'cancel' or 'raise', got {on_lost!r}")
        self._session = session
        self._holds = Holds(session, name)
        self.name = name
        self.ttl = ttl
        self.timeout = timeout
        self.renew = renew
        self.on_lost: OnLost = on_lost

    # -- acquiring and releasing -------------------------------------------------------

    async def acquire(
        self, *, timeout: float | None = _DEFAULT, ttl: float | None = None
    ) -> FencingToken:
        """Acquire the lock for the calling task and return its fencing token.

        Args:
            timeout: ``None`` waits forever, ``0`` tries once, ``x`` waits up to x
                seconds. Defaults to the lock's ``timeout``.
            ttl: lease length in seconds; defaults to the lock's ``ttl``.

        Raises:
            LockTimeout: not acquired in time; nothing is left behind.
            BackendUnavailable: the backend could not be reached (a waiter rides out
                a short outage first).
            LockUsageError: the calling task already holds or waits for this name
                through this client, or the client is not open.
        """
        acq = await self._holds.take(
            ttl=self.ttl if ttl is None else validate_ttl(ttl),
            timeout=self.timeout if timeout is _DEFAULT else validate_timeout(timeout),
            renew=self.renew,
        )
        return acq.token

    async def release(self, token: FencingToken | None = None) -> None:
        """Release the acquisition of the calling task, the one ``token`` names, or
        the only acquisition of this object.

        The task stops holding the lock locally at once, whatever the outcome; the
        request runs shielded from cancellation.

        Raises:
            LockNotOwnedError: this caller holds no acquisition, or the server no
                longer names it as the owner (its lease was lost).
            BackendUnavailable: the server could not be told; the release is retried
                in the background, and the lease ends at its ttl in any case.
        """
        await self._holds.release(self._holds.find(token))

    async def extend(self, ttl: float | None = None, *, token: FencingToken | None = None) -> None:
        """Reset the lease to ``ttl`` seconds from now (default: the lock's ttl).

        Raises:
            LockNotOwnedError: not held by the caller, or lost (then the lease is
                marked lost too).
        """
        acq = self._holds.find(token)
        new_ttl = acq.lease.ttl if ttl is None else validate_ttl(ttl)
        session = self._session
        started = session.clock.now()
        ok = await session.require_open().extend(self.name, acq.token.owner, ttl=new_ttl)
        if not ok:
            acq.lease.mark_lost("the server no longer names this holder as the owner")
            self._holds.forget(acq)
            raise LockNotOwnedError(self.name, "the lease was lost before extend()")
        acq.lease.confirm(started, new_ttl)
        session.rescheduled(acq.lease)

    # -- async with ------------------------------------------------------------------

    async def __aenter__(self) -> FencingToken:
        acq = await self._holds.take(ttl=self.ttl, timeout=self.timeout, renew=self.renew)
        self._holds.enter(acq, self.on_lost)
        return acq.token

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return await self._holds.exit(exc_type, exc, tb)

    # -- inspection ------------------------------------------------------------------

    @property
    def token(self) -> FencingToken | None:
        """The calling task's token, or ``None`` if it does not hold this lock."""
        acq = self._holds.mine()
        return acq.token if acq else None

    @property
    def lease(self) -> Lease | None:
        """The calling task's lease (state, ``remaining()``), or ``None``."""
        acq = self._holds.mine()
        return acq.lease if acq else None

    def owned(self) -> bool:
        """True if the calling task holds this lock and its lease is still safe."""
        acq = self._holds.mine()
        return acq is not None and acq.lease.held

    async def locked(self) -> bool:
        """True if anyone (any process) holds the lock right now. Does I/O."""
        info = await self.inspect()
        return info.holder is not None

    async def inspect(self) -> LockInfo:
        """The server's view of this lock: holder and queued waiters. Does I/O."""
        return await self._session.require_open().inspect(self.name)

    def statistics(self) -> LockStatistics:
        """Local counts for this object; does no I/O."""
        return LockStatistics(self.name, len(self._holds), self._holds.waiting)

    def __repr__(self) -> str:
        return f"<Lock {self.name!r} ttl={self.ttl:g} held_here={len(self._holds)}>"
