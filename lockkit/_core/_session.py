"""The session: what every primitive made by one client shares.

A :class:`Session` owns the client's lifecycle (the task group, the watchdog, the
cleanup queue, the open backend) and the bookkeeping that spans primitives: which
acquisitions are live, and which names each task holds or waits for, so that a task
asking for a name it already has (through any lock object) is told at once instead of
waiting on itself. :class:`lockkit.LockClient` is its public face; primitives receive
the session, never the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, final

import anyio

from . import _events
from ._backend import Action, Backend, BackendContext
from ._clock import Clock
from ._errors import LockError, LockUsageError
from ._events import Listener
from ._lease import Lease, Watchdog
from ._waiting import Cleanup

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

__all__ = ("Session", "current_task")

logger = logging.getLogger("lockkit")

#: How long closing the client may spend releasing what is still held.
CLOSE_TIMEOUT = 10.0


class _State(enum.Enum):
    NEW = "not open yet"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Releasable(Protocol):
    """A primitive that may hold acquisitions when the client closes."""

    async def release_all(self) -> None: ...


def current_task() -> asyncio.Task[object]:
    """The running asyncio task (the key of per-task acquisitions)."""
    try:
        task = _current_task()
    except RuntimeError:
        task = None
    if task is None:
        raise LockUsageError("lockkit locks are used from an asyncio task")
    return task


_current_task = asyncio.current_task


@final
class Session:
    """The shared state of one client. See the module docstring."""

    def __init__(self, backend: Backend, clock: Clock, drift_factor: float) -> None:
        self.backend = backend
        self.clock = clock
        self.drift_factor = drift_factor
        self.watchdog: Watchdog | None = None
        self.cleanup: Cleanup | None = None
        self._tg: TaskGroup | None = None
        self._state = _State.NEW
        self._stack: contextlib.AsyncExitStack | None = None
        #: primitives with live acquisitions, released when the client closes
        self._holders: dict[Releasable, None] = {}  # compact, unlike a set
        #: per task, the names it holds or waits for and the owner id doing so (an entry
        #: goes when its last name does; the task object as key cannot be reused)
        self._busy: dict[object, dict[str, str | Lease]] = {}
        #: who hears of this client's acquisitions, holds, releases and renewals; None
        #: while nothing listens (the hot path checks only this). See ._events.
        self.events: Listener | None = None
        self._listeners: tuple[Listener, ...] = ()

    # -- lifecycle -------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``"new"``, ``"open"`` or ``"closed"``."""
        return {
            _State.NEW: "new",
            _State.OPEN: "open",
            _State.CLOSING: "closing",
            _State.CLOSED: "closed",
        }[self._state]

    @property
    def is_open(self) -> bool:
        return self._state is _State.OPEN

    async def open(self) -> None:
        if self._state is not _State.NEW:
            raise LockUsageError(
                f"a LockClient can be opened only once (this one is {self._state.value}); "
                "make a new one with lockkit.connect()"
            )
        self._state = _State.CLOSED  # a failed open cannot be retried either
        async with contextlib.AsyncExitStack() as stack:
            # closing runs in reverse: release what is held, finish cleanups, stop the
            # background tasks, and only then close the backend's connections
            stack.push_async_callback(self._close_backend)
            tg = self._tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            cleanup = self.cleanup = Cleanup(self.clock, tg.start_soon)
            stack.push_async_callback(cleanup.aclose, CLOSE_TIMEOUT)
            stack.push_async_callback(self.release_all)
            self.watchdog = Watchdog(self.backend, self.clock, tg)
            _events.register(self)
            tg.start_soon(self.watchdog.run, name="lockkit-watchdog")
            try:
                ctx = BackendContext(self.clock, tg.start_soon, cleanup, self.watchdog.reconfirm)
                await self.backend.aopen(ctx)
            except LockError as exc:
                # raised here, outside the task group, which would wrap it in a group
                failed: LockError | None = exc
            else:
                failed = None
                self._stack = stack.pop_all()
        if failed is not None:
            _events.unregister(self)
            raise failed
        self._state = _State.OPEN

    async def aclose(self) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            self._state = _State.CLOSED
            return
        # closing: no new work, but releases that fail now still go to the cleanup queue
        self._state = _State.CLOSING
        try:
            # each step shields itself: the task group's own scope cannot be nested
            # inside a shield entered after it
            await stack.aclose()
        finally:
            self._state = _State.CLOSED
            _events.unregister(self)

    async def _close_backend(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.backend.aclose()

    def require_open(self) -> Backend:
        """The backend, or LockUsageError if the client is not open."""
        if self._state is not _State.OPEN:
            raise LockUsageError(
                f"the LockClient is {self._state.value}: use it inside "
                "'async with lockkit.connect(...) as locks:'"
            )
        return self.backend

    def start_soon(self, func: object, *args: object, name: str | None = None) -> None:
        """Run ``func(*args)`` in the client's task group."""
        assert self._tg is not None
        self._tg.start_soon(func, *args, name=name)  # type: ignore[arg-type]

    # -- listeners --------------------------------------------------------------------

    def listen(self, listener: Listener) -> None:
        """Report this client's events to ``listener`` too (see ``._events``)."""
        if listener not in self._listeners:
            self._listeners = (*self._listeners, listener)
        self.refresh_events()

    def unlisten(self, listener: Listener) -> None:
        self._listeners = tuple(x for x in self._listeners if x is not listener)
        self.refresh_events()

    @property
    def own_listeners(self) -> tuple[Listener, ...]:
        """The listeners given to :meth:`listen`."""
        return self._listeners

    @property
    def listeners(self) -> tuple[Listener, ...]:
        """The listeners this client reports to (its own and the process-wide ones)."""
        events = self.events
        if events is None:
            return ()
        return events.listeners if isinstance(events, _events.Fanout) else (events,)

    def refresh_events(self) -> None:
        """Recompute :attr:`events` (listeners or the log level changed)."""
        self.events = _events.combine(self._listeners)
        if self.watchdog is not None:
            self.watchdog.events = self.events

    # -- cleanups ---------------------------------------------------------------------

    def _cleanups(self) -> Cleanup | None:
        """The cleanup queue while it takes work (open, or closing), else None."""
        return self.cleanup if self._state in (_State.OPEN, _State.CLOSING) else None

    async def cleanup_run(self, what: str, action: Action, keep: float) -> None:
        """Run ``action`` now, shielded and bounded; retried in the background on failure.
        While closing it is only queued: the close's own budget bounds the last try."""
        if (cleanup := self._cleanups()) is None:
            return
        if self._state is _State.CLOSING:
            cleanup.defer(what, action, keep=keep)
        else:
            await cleanup.run(what, action, keep=keep)

    def cleanup_soon(self, what: str, action: Action, keep: float) -> None:
        """Run ``action`` in the background at once (bounded, retried on failure)."""
        if (cleanup := self._cleanups()) is not None:
            self.start_soon(cleanup.run, what, action, keep, name="lockkit-cleanup")

    def cleanup_defer(self, what: str, action: Action, keep: float) -> None:
        """Retry ``action`` in the background after a failure."""
        if (cleanup := self._cleanups()) is not None:
            cleanup.defer(what, action, keep=keep)

    # -- holdings --------------------------------------------------------------------

    def watch(self, lease: Lease) -> None:
        assert self.watchdog is not None
        self.watchdog.add(lease)

    def rescheduled(self, lease: Lease) -> None:
        """``lease`` was renewed outside the watchdog; it may need attention sooner."""
        if self.watchdog is not None:
            self.watchdog.reschedule(lease)

    def unwatch(self, lease: Lease) -> None:
        if self.watchdog is not None:
            self.watchdog.discard(lease)

    def holding(self, primitive: Releasable, live: bool) -> None:
        """Record whether ``primitive`` has live acquisitions."""
        if live:
            self._holders[primitive] = None
        else:
            self._holders.pop(primitive, None)

    def occupy(self, task: object, name: str, owner: str) -> None:
        """``task`` starts holding or waiting for ``name`` as ``owner``; LockUsageError
        if it already does (it would wait on itself)."""
        names = self._busy.get(task)
        if names is None:
            names = self._busy[task] = {}
        else:
            current = names.get(name)
            if current is not None and not (isinstance(current, Lease) and current.lost):
                raise LockUsageError(
                    f"this task already holds or waits for lock {name!r} through this "
                    "client; lockkit locks are not reentrant (release it first, or use "
                    "another task)"
                )
        names[name] = owner

    def occupied(self, task: object, name: str, lease: Lease) -> None:
        """``task`` now holds ``name`` under ``lease`` (it stops counting once lost)."""
        self._busy[task][name] = lease

    def vacate(self, task: object, name: str, owner: str) -> None:
        """``owner`` no longer holds ``name`` for ``task`` (a later owner is kept)."""
        names = self._busy.get(task)
        if names is None:
            return
        current = names.get(name)
        if current == owner or (isinstance(current, Lease) and current.token.owner == owner):
            del names[name]
            if not names:
                del self._busy[task]

    async def release_all(self) -> None:
        """Release every acquisition still held (on close), all at once, shielded and
        bounded; one that hangs does not hold up the others."""

        async def release(primitive: Releasable) -> None:
            try:
                await primitive.release_all()
            except LockError as exc:
                logger.warning("could not release a lock on close: %s", exc)

        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
            async with anyio.create_task_group() as tg:
                for primitive in list(self._holders):
                    tg.start_soon(release, primitive)
        self._holders.clear()

    @contextlib.contextmanager
    def pause_renewals(self) -> Iterator[None]:
        """No renewal is sent while inside (deadlines are still enforced)."""
        if self.watchdog is None:
            raise LockUsageError("open the client before pausing its renewals")
        watchdog = self.watchdog
        watchdog.paused = True
        try:
            yield
        finally:
            watchdog.paused = False
            watchdog.wake()  # renewals that fell due while paused go out now
