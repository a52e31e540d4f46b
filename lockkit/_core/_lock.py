"""The lock object: ``async with client.lock(name) as token``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, final

import anyio

from ..abc import LockInfo
from ._errors import (
    BackendUnavailable,
    ConfigurationError,
    LockError,
    LockLostError,
    LockNotOwnedError,
)
from ._lease import Lease
from ._names import validate_timeout, validate_ttl
from ._token import FencingToken

if TYPE_CHECKING:
    from ._client import LockClient

__all__ = ("Lock", "LockStatistics", "OnLost")

#: What ``async with`` does when the lease is lost while the body runs:
#: ``"cancel"`` cancels the body, ``"raise"`` lets it run to the end. Both then raise
#: :class:`LockLostError` from ``async with``.
OnLost = Literal["cancel", "raise"]

#: How long a shielded release may take before it is abandoned to expiry.
RELEASE_TIMEOUT = 10.0

_UNSET: Any = object()


def new_owner_id() -> str:
    """A fresh, unguessable id for one acquisition (128 random bits, hex)."""
    return secrets.token_hex(16)


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


@dataclasses.dataclass(slots=True, eq=False)
class _Acquisition:
    token: FencingToken
    lease: Lease
    task: int
    scope: anyio.CancelScope | None = None


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

    __slots__ = (
        "_by_task",
        "_client",
        "_entered",
        "_waiting",
        "name",
        "on_lost",
        "renew",
        "timeout",
        "ttl",
    )

    def __init__(
        self,
        client: LockClient,
        name: str,
        *,
        ttl: float,
        timeout: float | None,
        renew: bool,
        on_lost: OnLost,
    ) -> None:
        if on_lost not in ("cancel", "raise"):
            raise ConfigurationError(f"on_lost must be 'cancel' or 'raise', got {on_lost!r}")
        self._client = client
        self.name = name
        self.ttl = ttl
        self.timeout = timeout
        self.renew = renew
        self.on_lost: OnLost = on_lost
        self._by_task: dict[int, _Acquisition] = {}
        #: acquisitions entered with ``async with``, by task (they own a cancel scope)
        self._entered: dict[int, _Acquisition] = {}
        self._waiting = 0

    # -- acquiring and releasing -------------------------------------------------------

    async def acquire(
        self, *, timeout: float | None = _UNSET, ttl: float | None = None
    ) -> FencingToken:
        """Acquire the lock for the calling task and return its fencing token.

        Args:
            timeout: ``None`` waits forever, ``0`` tries once, ``x`` waits up to x
                seconds. Defaults to the lock's ``timeout``.
            ttl: lease length in seconds; defaults to the lock's ``ttl``.

        Raises:
            LockTimeout: not acquired in time; nothing is left behind.
            BackendUnavailable: the backend could not be reached.
            RuntimeError: the calling task already holds this lock object.
        """
        wait = self.timeout if timeout is _UNSET else validate_timeout(timeout)
        lease_ttl = self.ttl if ttl is None else validate_ttl(ttl)
        task = _task_id()
        if task in self._by_task:
            raise RuntimeError(
                f"this task already holds lock {self.name!r}; lockkit locks are not "
                "reentrant (use another Lock object or release first)"
            )
        client = self._client
        backend = client._require_open()
        owner = new_owner_id()
        self._waiting += 1
        try:
            grant = await backend.acquire(self.name, owner, ttl=lease_ttl, timeout=wait)
        finally:
            self._waiting -= 1
        token = FencingToken(grant.token, name=self.name, backend=backend.kind, owner=owner)
        lease = Lease(
            token, lease_ttl, client.clock, grant.started, client.drift_factor, renew=self.renew
        )
        self._by_task[task] = _Acquisition(token, lease, task)
        client._held.add(self)
        client._watch(lease)
        return token

    async def release(self, token: FencingToken | None = None) -> None:
        """Release the acquisition of the calling task, the one ``token`` names, or
        the only acquisition of this object.

        The release runs shielded from cancellation, so a cancelled caller still
        releases. Ownership is dropped locally only once the server confirmed.

        Raises:
            LockNotOwnedError: this caller holds no acquisition, or the server no
                longer names it as the owner (its lease was lost).
            BackendUnavailable: the server could not be told; the hold is no longer
                renewed and ends at its ttl. Calling ``release()`` again retries.
        """
        acq = self._find(token)
        await self._release(acq)

    async def extend(self, ttl: float | None = None, *, token: FencingToken | None = None) -> None:
        """Reset the lease to ``ttl`` seconds from now (default: the lock's ttl).

        Raises:
            LockNotOwnedError: not held by the caller, or lost (then the lease is
                marked lost too).
        """
        acq = self._find(token)
        new_ttl = acq.lease.ttl if ttl is None else validate_ttl(ttl)
        client = self._client
        started = client.clock.now()
        ok = await client._require_open().extend(self.name, acq.token.owner, ttl=new_ttl)
        if not ok:
            acq.lease.mark_lost("the server no longer names this holder as the owner")
            self._forget(acq)
            raise LockNotOwnedError(self.name, "the lease was lost before extend()")
        acq.lease.confirm(started, new_ttl)

    async def _release(self, acq: _Acquisition, *, lost_ok: bool = False) -> None:
        client = self._client
        client._unwatch(acq.lease)
        backend = client._require_open()
        owner = acq.token.owner
        try:
            ok = await backend.release(self.name, owner)
        except anyio.get_cancelled_exc_class():
            # the caller was cancelled: release anyway, shielded and bounded. Releasing
            # twice is harmless (owner ids are unique), so the request that may already
            # have been sent does not matter.
            with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_TIMEOUT):
                with contextlib.suppress(LockError):
                    if await backend.release(self.name, owner):
                        self._forget(acq)
                        acq.lease.mark_released()
            raise
        except BackendUnavailable:
            acq.lease.mark_at_risk()
            raise
        self._forget(acq)
        if not ok:
            acq.lease.mark_lost("the server no longer names this holder as the owner")
            if not lost_ok:
                raise LockNotOwnedError(
                    self.name, "its lease expired or was taken over before release()"
                )
        acq.lease.mark_released()

    def _forget(self, acq: _Acquisition) -> None:
        if self._by_task.get(acq.task) is acq:
            del self._by_task[acq.task]
        self._client._unwatch(acq.lease)
        if not self._by_task:
            self._client._held.discard(self)

    def _find(self, token: FencingToken | None) -> _Acquisition:
        if token is not None:
            for acq in self._by_task.values():
                if acq.token.same_acquisition(token):
                    return acq
            raise LockNotOwnedError(self.name, f"no acquisition of this object has token {token}")
        mine = self._by_task.get(_task_id())
        if mine is not None:
            return mine
        if len(self._by_task) == 1:  # unambiguous: the one acquisition of this object
            return next(iter(self._by_task.values()))
        if self._by_task:
            raise LockNotOwnedError(
                self.name, "several tasks hold it through this object; pass token="
            )
        raise LockNotOwnedError(self.name)

    # -- async with ------------------------------------------------------------------

    async def __aenter__(self) -> FencingToken:
        token = await self.acquire()
        task = _task_id()
        acq = self._by_task[task]
        scope = anyio.CancelScope()
        scope.__enter__()
        acq.scope = scope
        self._entered[task] = acq
        if self.on_lost == "cancel":
            acq.lease.on_lost(lambda _lease: scope.cancel())
        return token

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        task = _task_id()
        acq = self._entered.pop(task, None)
        if acq is None or acq.scope is None:  # pragma: no cover - unbalanced use
            return False
        swallowed = bool(acq.scope.__exit__(exc_type, exc, tb))
        acq.scope = None
        lease = acq.lease
        if self._by_task.get(task) is not acq:  # released (or found lost) inside the body
            if lease.lost and (exc is None or swallowed):
                raise LockLostError(self.name, lease.lost_reason or "lost", acq.token)
            return swallowed
        lost_before = lease.lost
        try:  # even after a loss: the server may still name us, so nobody waits for the ttl
            await self._release(acq, lost_ok=True)
        except LockError:
            if not lost_before:
                raise
            self._forget(acq)  # the loss is what the caller must hear about
        if lease.lost:  # lost in the body, or found out at release
            raise LockLostError(self.name, lease.lost_reason or "lost", acq.token)
        return swallowed

    # -- inspection ------------------------------------------------------------------

    @property
    def token(self) -> FencingToken | None:
        """The calling task's token, or ``None`` if it does not hold this lock."""
        acq = self._by_task.get(_task_id())
        return acq.token if acq else None

    @property
    def lease(self) -> Lease | None:
        """The calling task's lease (state, ``remaining()``), or ``None``."""
        acq = self._by_task.get(_task_id())
        return acq.lease if acq else None

    def owned(self) -> bool:
        """True if the calling task holds this lock and its lease is still safe."""
        acq = self._by_task.get(_task_id())
        return acq is not None and acq.lease.held

    async def locked(self) -> bool:
        """True if anyone (any process) holds the lock right now. Does I/O."""
        info = await self.inspect()
        return info.holder is not None

    async def inspect(self) -> LockInfo:
        """The server's view of this lock: holder and queued waiters. Does I/O."""
        return await self._client._require_open().inspect(self.name)

    def statistics(self) -> LockStatistics:
        """Local counts for this object; does no I/O."""
        return LockStatistics(self.name, len(self._by_task), self._waiting)

    def __repr__(self) -> str:
        return f"<Lock {self.name!r} ttl={self.ttl:g} held_here={len(self._by_task)}>"


def _task_id() -> int:
    task = _current_task()  # the cheap way on asyncio, where lockkit mostly runs
    return id(task) if task is not None else anyio.get_current_task().id


def _current_task() -> object | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # not on an asyncio loop (trio through anyio)
        return None
