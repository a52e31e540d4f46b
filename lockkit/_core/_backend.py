"""The backend contract: what a lock store implements, and the records it trades in.

A backend implements a few primitives (acquire with waiting, release, extend, inspect,
ping); :class:`lockkit.LockClient` builds leases, the watchdog, loss policy and the
``async with`` protocol on top, the way an httpx client sits on a transport. The
shared waiting machinery (:mod:`._waiting`) and error translation
(:func:`._errors.map_errors`) keep each backend module down to its own algorithm.

Public through :mod:`lockkit.abc`.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import enum
import functools
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, final

from ._clock import Clock, MonotonicClock
from ._errors import LockUsageError

if TYPE_CHECKING:
    from ._url import LockURL

__all__ = (
    "Action",
    "Backend",
    "BackendContext",
    "BackendStatistics",
    "Capability",
    "Claim",
    "CleanupQueue",
    "Grant",
    "HolderInfo",
    "LockInfo",
    "OwnerRecord",
    "Renewal",
    "WaiterInfo",
    "current_task_name",
    "owner_record",
    "task_field",
)


class Capability(enum.Enum):
    """What a backend offers beyond the basic lock. The conformance suite skips checks
    for capabilities a backend does not declare.

    .. versionadded:: 0.1
    """

    #: Waiters are served in arrival order and a releasing holder cannot barge.
    FAIR = "fair"
    #: Several clients (processes, hosts) share the same locks.
    DISTRIBUTED = "distributed"
    #: ``extend_many`` renews many locks in fewer round trips than one per lock.
    BATCH_RENEW = "batch_renew"
    #: Waiters are woken by the backend, never by polling.
    NOTIFY = "notify"
    #: ``Claim(shared=True)`` is honoured: shared holders exclude only exclusive ones
    #: (the read side of a read-write lock).
    SHARED = "shared"
    #: ``Claim(limit=n)`` is honoured: up to ``n`` holders at once (a semaphore).
    SEMAPHORE = "semaphore"
    #: :meth:`Backend.observe` follows the holder of a name (leader election).
    OBSERVE = "observe"
    #: :meth:`Backend.list_names` finds the names held or queued under a prefix.
    LIST = "list"
    #: :meth:`Backend.force_release` breaks a holder's lock (for operators).
    FORCE_RELEASE = "force_release"


class Claim(NamedTuple):
    """One acquisition a backend is asked to make (a named tuple: cheap to build on the
    hot path).

    Attributes:
        name: the lock name (already validated).
        owner: the acquisition's unique id, known before the request is sent so that a
            cleanup can find what a lost reply left on the server.
        ttl: lease length in seconds.
        shared: a shared hold (needs :attr:`Capability.SHARED`).
        limit: how many holders the name admits at once (needs
            :attr:`Capability.SEMAPHORE` when above 1).

    .. versionadded:: 0.1
    """

    name: str
    owner: str
    ttl: float
    shared: bool = False
    limit: int = 1

    @property
    def exclusive(self) -> bool:
        """True for a plain lock: one holder, nothing shared."""
        return not self.shared and self.limit == 1


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """What a backend returns for a successful acquisition.

    Attributes:
        token: the fencing token value.
        started: the clock reading taken *before* the request that made this
            acquisition take effect on the server was sent. The lease's safe deadline
            is ``started + ttl - drift``, so a late reply can only shorten it.
    """

    token: int
    started: float


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Renewal:
    """One lease to renew in :meth:`Backend.extend_many`."""

    name: str
    owner: str
    ttl: float


#: Longest host and task name kept in an owner record (the record stays ~200 bytes).
_RECORD_TEXT = 64


@final
@dataclasses.dataclass(frozen=True, slots=True)
class OwnerRecord:
    """Who holds or waits for a lock, as stored next to its entry on the server: for
    operators (``lockkit inspect``), never used to decide anything.

    Stored as compact JSON (``{"h":host,"p":pid,"t":task,"a":since,"v":version}``,
    well under 200 bytes); it carries nothing secret.

    Attributes:
        host: the host name of the process.
        pid: its process id.
        task: the name of the task that asked, if it has one.
        since: wall-clock time (``time.time()``) at which the holder acquired, or the
            waiter joined the queue.
        version: the lockkit version of the process.

    .. versionadded:: 0.2
    """

    host: str
    pid: int
    task: str | None
    since: float
    version: str

    def encode(self) -> bytes:
        """The compact JSON form stored on the server."""
        return _encode_record(self.host, self.pid, self.task, self.since, self.version).encode()

    @classmethod
    def decode(cls, data: bytes | str | None) -> OwnerRecord | None:
        """The record ``data`` holds; None for nothing or anything else (a value written
        by another program)."""
        if not data:
            return None
        try:
            raw = json.loads(data)
            host, pid, task = raw["h"], raw["p"], raw.get("t")
            since, version = raw["a"], raw.get("v", "")
        except (ValueError, TypeError, KeyError):
            return None
        if not (
            isinstance(host, str)
            and isinstance(pid, int)
            and isinstance(since, int | float)
            and isinstance(task, str | None)
            and isinstance(version, str)
        ):
            return None
        return cls(host, pid, task, float(since), version)


_process_part: tuple[int, str] = (-1, "")


def _process_prefix() -> str:
    """The part of every record that is the same for the whole process (after a fork,
    the new pid)."""
    global _process_part
    pid = os.getpid()
    if _process_part[0] != pid:
        from importlib.metadata import PackageNotFoundError, version

        try:
            ver = version("lockkit")
        except PackageNotFoundError:  # pragma: no cover - a source tree
            ver = "0.0.0"
        host = json.dumps(socket.gethostname()[:_RECORD_TEXT])
        _process_part = (pid, f'{{"h":{host},"p":{pid},"v":{json.dumps(ver)}')
    return _process_part[1]


def _encode_record(host: str, pid: int, task: str | None, since: float, version: str) -> str:
    text = json.dumps(task[:_RECORD_TEXT]) if task is not None else "null"
    return (
        f'{{"h":{json.dumps(host[:_RECORD_TEXT])},"p":{pid},"v":{json.dumps(version)},'
        f'"t":{text},"a":{since:.3f}}}'
    )


def current_task_name() -> str | None:
    """The name of the running task (asyncio or, through anyio, another loop)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    if task is not None:
        return task.get_name()
    try:
        import anyio

        return anyio.get_current_task().name
    except Exception:  # no event loop at all
        return None


@functools.lru_cache(maxsize=512)
def task_field(task: str | None) -> str:
    """``task`` as the JSON text of an owner record's task field (once per acquire;
    cached: a task that acquires in a loop asks for the same text every time)."""
    return json.dumps(task[:_RECORD_TEXT]) if task is not None else "null"


def owner_record(
    task: str | None = None, *, field: str | None = None, lease_ms: int | None = None
) -> str:
    """This process's owner record as JSON text, stamped now: for the running task,
    or for ``task``, or with ``field`` (from :func:`task_field`) as its task; with
    ``lease_ms`` it also carries the lease the acquisition asks for (``"l"``), which a
    server that grants a waiter outright needs."""
    if field is None:
        field = task_field(task if task is not None else current_task_name())
    if lease_ms is not None:
        return f'{_process_prefix()},"t":{field},"a":{time.time():.3f},"l":{lease_ms}}}'
    return f'{_process_prefix()},"t":{field},"a":{time.time():.3f}}}'


@final
@dataclasses.dataclass(frozen=True, slots=True)
class HolderInfo:
    """The current holder of a lock as the server sees it."""

    owner: str
    token: int
    #: Seconds left on the lease, if the backend can tell.
    expires_in: float | None
    #: Who the holder is (host, pid, task, since), where the backend stores it.
    #:
    #: .. versionadded:: 0.2
    record: OwnerRecord | None = None


@final
@dataclasses.dataclass(frozen=True, slots=True)
class WaiterInfo:
    """One acquisition queued for a lock, as the server sees it.

    .. versionadded:: 0.2
    """

    owner: str
    #: Its place in the backend's order (a sequence number, a revision, an arrival
    #: time), if the backend has one.
    sequence: int | None
    #: Who the waiter is, where the backend stores it.
    record: OwnerRecord | None = None


@final
@dataclasses.dataclass(frozen=True, slots=True)
class LockInfo:
    """What the server stores for one lock name: its holder and its queue."""

    name: str
    holder: HolderInfo | None
    #: How many acquisitions are queued behind the holder (all processes, where the
    #: backend knows).
    waiters: int
    #: The queued acquisitions in the order they will be served, where the backend can
    #: list them (it may list fewer than :attr:`waiters`, e.g. the first 100).
    #:
    #: .. versionadded:: 0.2
    queue: tuple[WaiterInfo, ...] = ()

    @property
    def idle(self) -> bool:
        """True when nothing at all is stored for this name: no holder and no waiter."""
        return self.holder is None and self.waiters == 0


@final
@dataclasses.dataclass(frozen=True, slots=True)
class BackendStatistics:
    """A snapshot of one backend's counters; every backend fills the same record.

    .. versionadded:: 0.1
    """

    #: Requests sent to the server, by kind (script or command name).
    requests: Mapping[str, int]
    #: Wake-up messages received for this client's waiters.
    wakeups: int
    #: Subscriptions or watches opened for waiting.
    subscriptions: int
    #: Acquisitions of this client waiting right now.
    waiting: int
    #: Cleanups (of abandoned waits or releases) not yet confirmed by the server.
    cleanups_pending: int

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


#: An undo action (leave a queue, release a lock): a coroutine factory, so that it can be
#: run again on retry.
Action = Callable[[], Awaitable[object]]


class CleanupQueue(Protocol):
    """Where a backend sends undo actions that must reach the server (the client's
    :class:`lockkit.abc.Cleanup` is the implementation)."""

    @property
    def pending(self) -> int: ...

    async def run(self, what: str, action: Action, keep: float | None = None) -> bool:
        """Run ``action`` now, shielded from cancellation and bounded; on failure it is
        retried in the background. True if it succeeded now."""
        ...

    def defer(self, what: str, action: Action, *, keep: float | None = None) -> None:
        """Retry ``action`` in the background until it succeeds or ``keep`` passes."""
        ...


class Reconfirm(Protocol):
    """``BackendContext.reconfirm``: see there."""

    def __call__(self, within: float, reason: str | None = None) -> None: ...


def _no_reconfirm(within: float, reason: str | None = None) -> None:
    return None


@final
@dataclasses.dataclass(frozen=True, slots=True)
class BackendContext:
    """What the client hands a backend when it opens it.

    Attributes:
        clock: the client's monotonic clock; every deadline is on it.
        start_soon: starts a background task in the client's task group; it is
            cancelled when the client closes, after the backend's ``aclose``-time
            cleanup has run.
        cleanup: shielded, bounded, retried undo actions (see :class:`CleanupQueue`).
        reconfirm: ``reconfirm(within, reason=None)`` says that every lease granted so
            far may no longer be backed by the server (a failover, a session in doubt):
            each is renewed at once, and declared lost unless a renewal sent from now
            on confirms it within ``within`` seconds; ``reason`` is then the loss
            reason the holder sees (``reconfirm(0, reason)`` loses them all at once).
    """

    clock: Clock
    start_soon: Callable[..., object]
    cleanup: CleanupQueue
    reconfirm: Reconfirm = _no_reconfirm


class Backend(abc.ABC):
    """A lock store. Subclasses set :attr:`kind`, :attr:`schemes` and
    :attr:`capabilities` and implement the abstract methods.

    Contract (the conformance suite in :mod:`lockkit.testing` checks it):

    * ``aopen`` verifies the server with one round trip (credentials included) and
      raises :class:`~lockkit.BackendUnavailable` or
      :class:`~lockkit.ConfigurationError` there, not at the first lock.
    * ``acquire`` returns a :class:`Grant` whose token is higher than any token
      previously granted for the name, or raises :class:`~lockkit.LockTimeout`
      (``timeout=0`` tries once). When it raises for any reason, including
      cancellation, nothing it created on the server remains, even if the server
      applied the request and the reply was lost: ``claim.owner`` is known before the
      call so the cleanup can find it.
    * ``aclose`` ends the backend's waits in flight with :class:`~lockkit.LockUsageError`
      (closing the :class:`~lockkit.abc.WaitRoom` they sit in does it).
    * ``release`` and ``extend`` return ``False`` when the server does not name
      ``owner`` as the holder (a definite answer), and then change nothing; they
      raise :class:`~lockkit.BackendUnavailable` when they cannot tell.
    * Driver exceptions never escape: they are wrapped in lockkit errors.

    .. versionadded:: 0.1
    """

    #: Short name used in tokens and messages, e.g. ``"redis"``.
    kind: ClassVar[str]
    #: URL schemes this backend serves.
    schemes: ClassVar[tuple[str, ...]] = ()
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    _context: BackendContext | None = None
    #: The client's clock, set by :meth:`aopen` (the real clock until then).
    clock: Clock = MonotonicClock()

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: LockURL, **options: Any) -> Backend:
        """Build an unopened backend from a parsed URL and keyword options."""

    @property
    def context(self) -> BackendContext:
        """The context given to :meth:`aopen`; raises before it was opened."""
        if self._context is None:
            raise LockUsageError(f"{type(self).__name__} is not open")
        return self._context

    async def aopen(self, ctx: BackendContext) -> None:
        """Connect and verify the server (one round trip). Called once by the client
        before any other method; subclasses call ``super().aopen(ctx)`` first."""
        self._context = ctx
        self.clock = ctx.clock

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Disconnect, closing only what this backend opened itself. Idempotent."""

    async def ping(self) -> None:  # noqa: B027 - in-process backends have nothing to ask
        """One round trip to the server; raises BackendUnavailable if it fails."""

    @abc.abstractmethod
    async def acquire(self, claim: Claim, *, timeout: float | None) -> Grant:
        """Take ``claim.name`` for ``claim.owner``, waiting up to ``timeout``."""

    @abc.abstractmethod
    async def release(self, name: str, owner: str) -> bool:
        """Release ``name`` if ``owner`` holds it; wake the next waiter."""

    @abc.abstractmethod
    async def extend(self, name: str, owner: str, *, ttl: float) -> bool:
        """Reset the lease of ``owner`` on ``name`` to ``ttl`` seconds from now."""

    async def extend_many(self, renewals: Sequence[Renewal]) -> list[bool | BaseException]:
        """Renew many leases; one result per renewal, in order: ``True`` renewed,
        ``False`` not the owner, an exception if that one could not be told.
        Backends declaring :attr:`Capability.BATCH_RENEW` override this."""
        results: list[bool | BaseException] = []
        for r in renewals:
            try:
                results.append(await self.extend(r.name, r.owner, ttl=r.ttl))
            except Exception as exc:
                results.append(exc)
        return results

    @abc.abstractmethod
    async def inspect(self, name: str) -> LockInfo:
        """What the server stores for ``name``."""

    async def list_names(self, prefix: str = "") -> list[str]:
        """The names held or queued now whose name starts with ``prefix``, sorted.
        Backends declaring :attr:`Capability.LIST` override this.

        .. versionadded:: 0.2
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list lock names")

    async def force_release(self, name: str) -> int | None:
        """Break the lock on ``name`` whoever holds it: delete the holder's entry so that
        the next waiter gets the lock. The holder learns it at its next renewal
        (:class:`~lockkit.LockLostError`). Returns the token broken, or None if nothing
        held ``name``. For operators; backends declaring
        :attr:`Capability.FORCE_RELEASE` override this.

        .. versionadded:: 0.2
        """
        raise NotImplementedError(f"{type(self).__name__} cannot break locks")

    def observe(self, name: str) -> AsyncIterator[HolderInfo | None]:
        """Follow the holder of ``name``: yields the holder now and after each change.
        Backends declaring :attr:`Capability.OBSERVE` override this."""
        raise NotImplementedError(f"{type(self).__name__} cannot observe holders")

    def statistics(self) -> BackendStatistics:
        """Counters for tests, benchmarks and operators; does no I/O."""
        cleanup = self._context.cleanup.pending if self._context is not None else 0
        return BackendStatistics({}, 0, 0, 0, cleanup)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"
