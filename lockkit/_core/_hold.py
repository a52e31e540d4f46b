"""Being held: per-task acquisitions of one name, and the ``async with`` protocol.

:class:`Holds` is the machinery every primitive shares (a lock today; the sides of a
read-write lock, a semaphore and an election tomorrow): it asks the backend for a
:class:`Claim`, turns the grant into a token and a watched lease, keys the acquisition
by the task object that made it, runs the body of ``async with`` in a cancel scope that
the lease's loss cancels, and releases shielded and bounded.

Two rules keep the local books straight whatever the server does:

* after ``release()`` or the end of ``async with``, the task no longer holds the lock
  locally, whatever the release's outcome (a release the server could not be told is
  retried in the background; the lease expires on the server anyway, and the token is
  already fenced);
* a loss reaches the caller when the body is cancelled, not when a release to an
  unreachable server gives up: that release runs in the background, bounded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from types import TracebackType
from typing import Literal, final

import anyio

from ._backend import Action, Claim
from ._errors import BackendUnavailable, LockLostError, LockNotOwnedError, LockUsageError
from ._events import Probe, fields
from ._lease import Lease
from ._session import Session, current_task
from ._token import FencingToken

__all__ = ("RELEASE_TIMEOUT", "Acquisition", "Holds", "OnLost", "new_owner_id")

logger = logging.getLogger("lockkit")

#: What ``async with`` does when the lease is lost while the body runs:
#: ``"cancel"`` cancels the body, ``"raise"`` lets it run to the end. Both then raise
#: :class:`LockLostError` from ``async with``.
OnLost = Literal["cancel", "raise"]

#: How long a shielded release may take before it is left to the background.
RELEASE_TIMEOUT = 10.0


def new_owner_id() -> str:
    """A fresh, unguessable id for one acquisition (128 random bits from the OS, hex;
    what ``secrets.token_hex(16)`` returns, without its two extra calls)."""
    return os.urandom(16).hex()


@dataclasses.dataclass(slots=True, eq=False)
class Acquisition:
    """One hold: its token, its lease, and the task that made it."""

    token: FencingToken
    lease: Lease
    task: asyncio.Task[object]
    scope: anyio.CancelScope | None = None


@final
class Holds:
    """The acquisitions of one primitive on one name, at most one per task."""

    __slots__ = ("_by_task", "_entered", "name", "session", "waiting")

    def __init__(self, session: Session, name: str) -> None:
        self.session = session
        self.name = name
        #: the live acquisitions, by the task object that made them (never reused
        #: while it is a key, unlike ``id(task)``): None, the only one, or a dict
        #: once several tasks hold through this object (one is the common case, and
        #: a dict per held lock would double the memory a hold takes)
        self._by_task: Acquisition | dict[asyncio.Task[object], Acquisition] | None = None
        #: every live acquisition by owner id, including those of tasks that ended
        #: acquisitions entered with ``async with`` (they own a cancel scope)
        self._entered: dict[asyncio.Task[object], Acquisition] | None = None  # made on use
        self.waiting = 0

    def __len__(self) -> int:
        held = self._by_task
        return 0 if held is None else 1 if isinstance(held, Acquisition) else len(held)

    def _get(self, task: asyncio.Task[object]) -> Acquisition | None:
        held = self._by_task
        if held is None or isinstance(held, Acquisition):
            return held if held is not None and held.task is task else None
        return held.get(task)

    def _all(self) -> list[Acquisition]:
        held = self._by_task
        return [] if held is None else [held] if isinstance(held, Acquisition) else [*held.values()]

    def _put(self, acq: Acquisition) -> None:
        held = self._by_task
        if held is None:
            self._by_task = acq
        elif isinstance(held, Acquisition):
            self._by_task = {held.task: held, acq.task: acq}
        else:
            held[acq.task] = acq

    def _drop(self, acq: Acquisition) -> None:
        held = self._by_task
        if held is acq:
            self._by_task = None
        elif isinstance(held, dict) and held.get(acq.task) is acq:
            del held[acq.task]
            if len(held) == 1:
                self._by_task = next(iter(held.values()))

    # -- taking ------------------------------------------------------------------------

    async def take(
        self, *, ttl: float, timeout: float | None, renew: bool, shared: bool = False
    ) -> Acquisition:
        session = self.session
        backend = session.require_open()
        task = current_task()
        if self._get(task) is not None:
            raise LockUsageError(
                f"this task already holds lock {self.name!r}; lockkit locks are not "
                "reentrant (release it first, or use another task)"
            )
        owner = new_owner_id()
        name = self.name
        session.occupy(task, name, owner)
        self.waiting += 1
        probe = (
            None
            if (events := session.events) is None
            else Probe(events, name, backend.kind, owner, session.clock)
        )
        try:
            # a wait is cancelled when the client closes (BackendContext.waiting)
            grant = await backend.acquire(Claim(name, owner, ttl, shared), timeout=timeout)
            if not session.is_open:  # granted as the client closed: give it back
                with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_TIMEOUT):
                    await backend.release(name, owner)
                raise LockUsageError(f"the LockClient was closed while acquiring {name!r}")
        except BaseException as exc:
            session.vacate(task, name, owner)
            if probe is not None:
                probe.failed(exc)
            raise
        finally:
            self.waiting -= 1
        token = FencingToken(grant.token, name=name, backend=backend.kind, owner=owner)
        lease = Lease(token, ttl, session.clock, grant.started, session.drift_factor, renew=renew)
        if probe is not None:
            probe.acquired(token, lease)
        acq = Acquisition(token, lease, task)
        session.occupied(task, name, lease)  # once lost, the task may ask for it again
        self._put(acq)
        if len(self) == 1:
            session.holding(self, True)
        session.watch(lease)
        return acq

    # -- finding -----------------------------------------------------------------------

    def mine(self) -> Acquisition | None:
        """The calling task's acquisition, if any."""
        try:
            task = current_task()
        except LockUsageError:
            return None
        return self._get(task)

    def find(self, token: FencingToken | None) -> Acquisition:
        """The acquisition ``token`` names, else the calling task's, else the only one."""
        if token is not None:
            for acq in self._all():
                if acq.token.same_acquisition(token):
                    return acq
            raise LockNotOwnedError(self.name, f"no live acquisition has token {token}")
        mine = self.mine()
        if mine is not None:
            return mine
        held = self._all()
        if len(held) == 1:  # unambiguous: the one acquisition of this object
            return held[0]
        if held:
            raise LockNotOwnedError(
                self.name, "several tasks hold it through this object; pass token="
            )
        raise LockNotOwnedError(self.name)

    # -- releasing ---------------------------------------------------------------------

    def forget(self, acq: Acquisition) -> None:
        """Drop ``acq`` from the local books (the lease is no longer renewed)."""
        session = self.session
        session.unwatch(acq.lease)
        self._drop(acq)
        session.vacate(acq.task, self.name, acq.token.owner)
        if self._by_task is None:
            session.holding(self, False)

    async def release(self, acq: Acquisition, *, lost_ok: bool = False) -> None:
        """Release ``acq``: forgotten locally at once, then told to the server.

        Raises:
            LockNotOwnedError: the server no longer named this holder (unless
                ``lost_ok``); the lease is marked lost.
            BackendUnavailable: the server could not be told; the release goes on in
                the background until the lease would have expired anyway.
        """
        self.forget(acq)
        backend = self.session.backend
        owner = acq.token.owner
        lease = acq.lease
        if (probe := lease.probe) is not None:
            probe.release_started()
        try:
            ok = await backend.release(self.name, owner)
        except anyio.get_cancelled_exc_class():
            # the caller was cancelled: release anyway, shielded and bounded. The first
            # request may already have released, so a "not the owner" now means nothing.
            if probe is not None:
                probe.release_ended("cancelled")
            lease.mark_released()
            await self.session.cleanup_run(*self._cleanup_for(acq))
            raise
        except BackendUnavailable:
            if probe is not None:
                probe.release_ended("unavailable")
            self.session.cleanup_defer(*self._cleanup_for(acq))
            lease.mark_released()
            raise
        if probe is not None:
            probe.release_ended("released" if ok else "not_owner")
        if not ok:
            lease.mark_lost("the server no longer names this holder as the owner")
            if not lost_ok:
                raise LockNotOwnedError(
                    self.name, "its lease expired or was taken over before release()"
                )
            return
        lease.mark_released()

    def _cleanup_for(self, acq: Acquisition) -> tuple[str, Action, float]:
        """A retryable release of ``acq`` for the cleanup queue, kept for its ttl (past
        it the server has let the lease go anyway)."""
        name, owner, backend = self.name, acq.token.owner, self.session.backend

        async def release() -> None:
            await backend.release(name, owner)

        return f"release lock {name!r}", release, max(1.0, acq.lease.ttl)

    async def release_all(self) -> None:
        """Release every acquisition (the client is closing), all at once. A body still
        running inside ``async with`` is told first: its lease is lost, so it is
        cancelled (or, with ``on_lost="raise"``, ends with LockLostError)."""

        async def release(acq: Acquisition) -> None:
            if acq.scope is not None:
                acq.lease.mark_lost("the LockClient was closed while the lock was held")
            try:
                await self.release(acq, lost_ok=True)
            except BackendUnavailable as exc:  # retried until the close gives up
                logger.warning(
                    "could not release lock %r on close: %s",
                    self.name,
                    exc,
                    extra=fields(acq.token, error=str(exc)),
                )

        async with anyio.create_task_group() as tg:
            for acq in self._all():
                tg.start_soon(release, acq)

    # -- async with --------------------------------------------------------------------

    def enter(self, acq: Acquisition, on_lost: OnLost) -> None:
        """Open the body's cancel scope for ``acq``, just taken by the calling task."""
        scope = anyio.CancelScope()
        scope.__enter__()
        acq.scope = scope
        if self._entered is None:
            self._entered = {}
        self._entered[acq.task] = acq
        if on_lost == "cancel":
            acq.lease.on_lost(lambda _lease: scope.cancel())

    async def exit(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        entered = self._entered
        acq = entered.pop(current_task(), None) if entered else None
        if not entered:
            self._entered = None  # a dict per lock only while a body runs
        if acq is None or acq.scope is None:  # pragma: no cover - unbalanced use
            return False
        swallowed = bool(acq.scope.__exit__(exc_type, exc, tb))
        acq.scope = None
        lease = acq.lease
        if self._get(acq.task) is not acq:  # released or lost in the body
            if lease.lost and (exc is None or swallowed):
                raise LockLostError(self.name, lease.lost_reason or "lost", acq.token)
            return swallowed
        if lease.lost:
            # the caller hears of the loss now; the server may still name us, so a
            # release goes out in the background (bounded) and nobody waits for the ttl
            self.forget(acq)
            self.session.cleanup_soon(*self._cleanup_for(acq))
            raise LockLostError(self.name, lease.lost_reason or "lost", acq.token)
        try:
            await self.release(acq, lost_ok=True)
        except BackendUnavailable as exc:
            # the body's outcome stands: the release is retried in the background and the
            # lease ends at its ttl anyway; the token already fences the storage
            logger.warning(
                "lock %r: release deferred, the server did not answer: %s",
                self.name,
                exc,
                extra=fields(acq.token, error=str(exc)),
            )
        if lease.lost:  # found out at release
            raise LockLostError(self.name, lease.lost_reason or "lost", acq.token)
        return swallowed
