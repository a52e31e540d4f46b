"""The in-process backend: ``memory://``.

Locks live in the memory of one process, so it excludes tasks of that process only. It
is the embedded default, the reference for the semantics every backend shares, and
what tests of code using lockkit can run on without a server.

URL: ``memory://`` gives a private store for the client; ``memory://NAME`` names a
store shared by every client in the process that uses the same name.

Guarantees: tokens come from one counter per store, so they strictly increase across
all names; waiters are served in arrival order with direct handoff (a release grants
the lock to the oldest waiter and wakes only that one); a holder that stops renewing
loses the lock when its ttl runs out on the client's clock; a cancelled or timed-out
waiter leaves nothing behind.

.. versionadded:: 0.1
"""

from __future__ import annotations

import collections
import dataclasses
import math
import weakref
from typing import Any, ClassVar, final

import anyio
import anyio.lowlevel

from .._core._backend import (
    Backend,
    Capability,
    Claim,
    Grant,
    HolderInfo,
    LockInfo,
    OwnerRecord,
    WaiterInfo,
    current_task_name,
    owner_record,
    task_field,
)
from .._core._errors import ConfigurationError, LockTimeout, LockUsageError
from .._core._events import queued
from .._core._options import parse_options
from .._core._url import LockURL

__all__ = ("MemoryBackend",)


@dataclasses.dataclass(slots=True, eq=False)
class _Waiter:
    owner: str
    ttl: float
    event: anyio.Event
    #: the owner record's task field (JSON text), and the record while queued
    task: str
    record: str
    grant: Grant | None = None


@dataclasses.dataclass(slots=True, eq=False)
class _Entry:
    holder: str | None = None
    token: int = 0
    expires_at: float = math.inf
    #: the holder's owner record (JSON text, as a server would store it)
    record: str = ""
    queue: collections.deque[_Waiter] = dataclasses.field(default_factory=collections.deque)


@final
class _Store:
    """The shared state behind one ``memory://`` store."""

    __slots__ = ("__weakref__", "counter", "entries")

    def __init__(self) -> None:
        self.counter = 0
        self.entries: dict[str, _Entry] = {}


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class MemoryOptions:
    """The memory backend takes no options."""


_named_stores: weakref.WeakValueDictionary[str, _Store] = weakref.WeakValueDictionary()


@final
class MemoryBackend(Backend):
    """Locks in this process's memory. See the module docstring for guarantees.

    .. versionadded:: 0.1
    """

    kind: ClassVar[str] = "memory"
    schemes: ClassVar[tuple[str, ...]] = ("memory",)
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.FAIR,
            Capability.BATCH_RENEW,
            Capability.NOTIFY,
            Capability.LIST,
            Capability.FORCE_RELEASE,
        }
    )

    def __init__(self, store_name: str | None = None) -> None:
        self.store_name = store_name
        self._waiters: set[_Waiter] = set()
        self._closed = False
        if store_name is None:
            self._store = _Store()
        else:
            store = _named_stores.get(store_name)
            if store is None:
                store = _named_stores[store_name] = _Store()
            self._store = store

    async def aclose(self) -> None:
        """End this client's waits (LockUsageError); the store's locks stay."""
        self._closed = True
        for waiter in list(self._waiters):
            waiter.event.set()

    @classmethod
    def from_url(cls, url: LockURL, **options: Any) -> MemoryBackend:
        parse_options(MemoryOptions, cls.kind, url.query, options)
        if len(url.hosts) > 1 or url.path not in ("", "/"):
            raise ConfigurationError(
                "a memory:// URL is 'memory://' or 'memory://STORE_NAME', nothing more"
            )
        return cls(url.hosts[0][0] if url.hosts else None)

    # -- primitives ------------------------------------------------------------------

    async def acquire(self, claim: Claim, *, timeout: float | None) -> Grant:
        if not claim.exclusive:
            raise ConfigurationError("the memory backend offers exclusive locks only")
        name, owner, ttl = claim.name, claim.owner, claim.ttl
        await anyio.lowlevel.checkpoint()  # every acquire lets other tasks run
        now = self.clock.now()
        self._expire(name, self._entry(name), now)
        entry = self._entry(name)  # an expiry with nobody queued dropped the old entry
        task = task_field(current_task_name())
        if entry.holder is None and not entry.queue:
            return self._grant(entry, owner, ttl, now, task)
        if timeout == 0:
            self._gc(name, entry)
            raise LockTimeout(name, 0)
        deadline = math.inf if timeout is None else now + timeout
        waiter = _Waiter(owner, ttl, anyio.Event(), task, owner_record(field=task))
        return await self._wait(name, entry, waiter, deadline, timeout)

    async def _wait(
        self, name: str, entry: _Entry, waiter: _Waiter, deadline: float, timeout: float | None
    ) -> Grant:
        entry.queue.append(waiter)
        queued(len(entry.queue))  # for listeners: 1 is next in line
        self._waiters.add(waiter)
        try:
            while True:
                if self._closed:  # aclose() woke us
                    raise LockUsageError(f"the LockClient was closed while waiting for {name!r}")
                bound = deadline
                if entry.queue and entry.queue[0] is waiter:
                    bound = min(bound, entry.expires_at)  # only the head watches expiry
                await self.clock.wait(waiter.event, bound)
                waiter.event = anyio.Event()
                if (grant := waiter.grant) is not None:
                    return grant
                now = self.clock.now()
                self._expire(name, entry, now)  # may hand the lock to this waiter
                if (grant := waiter.grant) is not None:
                    return grant
                if now >= deadline:
                    raise LockTimeout(name, timeout if timeout is not None else math.inf)
        except BaseException:
            self._abandon(name, entry, waiter)
            raise
        finally:
            self._waiters.discard(waiter)

    def _held_by(self, name: str, owner: str, now: float) -> _Entry | None:
        """The entry of ``name`` if ``owner`` holds it now, else None."""
        entry = self._store.entries.get(name)
        if entry is None:
            return None
        self._expire(name, entry, now)
        return entry if entry.holder == owner else None

    async def release(self, name: str, owner: str) -> bool:
        now = self.clock.now()
        if (entry := self._held_by(name, owner, now)) is None:
            return False
        entry.holder = None
        self._handoff(name, entry, now)
        return True

    async def extend(self, name: str, owner: str, *, ttl: float) -> bool:
        now = self.clock.now()
        if (entry := self._held_by(name, owner, now)) is None:
            return False
        entry.expires_at = now + ttl
        return True

    async def inspect(self, name: str) -> LockInfo:
        entry = self._store.entries.get(name)
        if entry is None:
            return LockInfo(name, None, 0)
        now = self.clock.now()
        self._expire(name, entry, now)
        holder = None
        if entry.holder is not None:
            holder = HolderInfo(
                entry.holder,
                entry.token,
                max(0.0, entry.expires_at - now),
                OwnerRecord.decode(entry.record),
            )
        queue = tuple(
            WaiterInfo(w.owner, i, OwnerRecord.decode(w.record)) for i, w in enumerate(entry.queue)
        )
        return LockInfo(name, holder, len(entry.queue), queue)

    async def list_names(self, prefix: str = "") -> list[str]:
        now = self.clock.now()
        for name, entry in list(self._store.entries.items()):
            self._expire(name, entry, now)
        return sorted(n for n in self._store.entries if n.startswith(prefix))

    async def force_release(self, name: str) -> int | None:
        entry = self._store.entries.get(name)
        if entry is None:
            return None
        now = self.clock.now()
        self._expire(name, entry, now)
        if entry.holder is None:
            return None
        token, entry.holder = entry.token, None
        self._handoff(name, entry, now)
        return token

    @property
    def names(self) -> list[str]:
        """Names with anything stored (holder or waiters); for tests and the CLI."""
        return list(self._store.entries)

    # -- internals -------------------------------------------------------------------

    def _entry(self, name: str) -> _Entry:
        entry = self._store.entries.get(name)
        if entry is None:
            entry = self._store.entries[name] = _Entry()
        return entry

    def _grant(self, entry: _Entry, owner: str, ttl: float, now: float, task: str) -> Grant:
        self._store.counter += 1
        entry.holder = owner
        entry.token = self._store.counter
        entry.expires_at = now + ttl
        entry.record = owner_record(field=task)
        return Grant(entry.token, now)

    def _expire(self, name: str, entry: _Entry, now: float) -> None:
        if entry.holder is not None and now >= entry.expires_at:
            entry.holder = None
            self._handoff(name, entry, now)

    def _handoff(self, name: str, entry: _Entry, now: float) -> None:
        """The lock is free: grant it to the oldest waiter, or drop the entry."""
        entry.expires_at = math.inf
        if entry.queue:
            waiter = entry.queue.popleft()
            waiter.grant = self._grant(entry, waiter.owner, waiter.ttl, now, waiter.task)
            waiter.event.set()
            if entry.queue:  # the new head must now watch the new holder's expiry
                entry.queue[0].event.set()
        else:
            self._gc(name, entry)

    def _abandon(self, name: str, entry: _Entry, waiter: _Waiter) -> None:
        """A waiter leaves (timeout, cancellation): remove every trace of it."""
        if waiter.grant is not None:
            if entry.holder == waiter.owner:  # granted as it left: pass it on
                entry.holder = None
                self._handoff(name, entry, self.clock.now())
            return
        was_head = bool(entry.queue) and entry.queue[0] is waiter
        try:
            entry.queue.remove(waiter)
        except ValueError:
            pass
        if was_head and entry.queue:
            entry.queue[0].event.set()
        self._gc(name, entry)

    def _gc(self, name: str, entry: _Entry) -> None:
        if entry.holder is None and not entry.queue and self._store.entries.get(name) is entry:
            del self._store.entries[name]

    def __repr__(self) -> str:
        store = "private" if self.store_name is None else repr(self.store_name)
        return f"<MemoryBackend store={store}>"
