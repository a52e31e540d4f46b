"""The two extension points of lockkit: :class:`Backend` and :class:`Guard`.

A backend implements a handful of primitives (acquire with waiting, release, extend,
inspect); :class:`lockkit.LockClient` builds locks, leases, the watchdog and the
``async with`` protocol on top, the way an httpx client sits on a transport. A guard is
the storage side of fencing: it refuses a write whose token is older than one it
already accepted for the same resource.

.. versionadded:: 0.1
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar, final

from ._core._clock import Clock, MonotonicClock
from ._core._errors import StaleTokenError
from ._core._token import FencingToken
from ._core._url import LockURL

__all__ = (
    "Backend",
    "Capability",
    "Fence",
    "Grant",
    "Guard",
    "HolderInfo",
    "LockInfo",
    "Renewal",
    "check_fence",
)

ValueT = TypeVar("ValueT")


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


@final
@dataclasses.dataclass(frozen=True, slots=True)
class HolderInfo:
    """The current holder of a lock as the server sees it."""

    owner: str
    token: int
    #: Seconds left on the lease, if the backend can tell.
    expires_in: float | None


@final
@dataclasses.dataclass(frozen=True, slots=True)
class LockInfo:
    """What the server stores for one lock name: its holder and its queue."""

    name: str
    holder: HolderInfo | None
    #: Acquisitions queued behind the holder (all processes, where the backend knows).
    waiters: int

    @property
    def idle(self) -> bool:
        """True when nothing at all is stored for this name: no holder and no waiter."""
        return self.holder is None and self.waiters == 0


class Backend(abc.ABC):
    """A lock store. Subclasses set :attr:`kind`, :attr:`schemes` and
    :attr:`capabilities` and implement the abstract methods.

    Contract (the conformance suite in :mod:`lockkit.testing` checks it):

    * ``acquire`` returns a :class:`Grant` whose token is higher than any token
      previously granted for the name, or raises :class:`~lockkit.LockTimeout`
      (``timeout=0`` tries once). When it raises for any reason, including
      cancellation, nothing it created on the server remains, even if the server
      applied the request and the reply was lost: ``owner`` is known before the
      call so the cleanup can find it.
    * ``release`` and ``extend`` return ``False`` when the server does not name
      ``owner`` as the holder (a definite answer); they raise
      :class:`~lockkit.BackendUnavailable` when they cannot tell.
    * Driver exceptions never escape: they are wrapped in lockkit errors.

    .. versionadded:: 0.1
    """

    #: Short name used in tokens and messages, e.g. ``"redis"``.
    kind: ClassVar[str]
    #: URL schemes this backend serves.
    schemes: ClassVar[tuple[str, ...]] = ()
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    clock: Clock = MonotonicClock()

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: LockURL, **options: Any) -> Backend:
        """Build an unopened backend from a parsed URL and keyword options."""

    async def aopen(self, clock: Clock) -> None:
        """Connect. Called once by the client before any other method."""
        self.clock = clock

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Disconnect, closing only what this backend opened itself. Idempotent."""

    @abc.abstractmethod
    async def acquire(self, name: str, owner: str, *, ttl: float, timeout: float | None) -> Grant:
        """Take ``name`` for ``owner`` for ``ttl`` seconds, waiting up to ``timeout``."""

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

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Fence:
    """The highest token a guard accepted for one resource."""

    resource: str
    token: int
    owner: str
    lock: str
    backend: str


def check_fence(resource: str, current: Fence | None, offered: FencingToken) -> None:
    """The acceptance rule every guard applies (atomically, in its storage).

    A token is accepted iff no fence exists yet, or it was minted for the same lock
    and backend as the fence and is either higher, or equal and from the same
    acquisition. Anything else raises :class:`~lockkit.StaleTokenError`.
    """
    if not isinstance(offered, FencingToken):
        raise TypeError(
            "guards take the FencingToken yielded by a lock; rebuild one received from "
            "elsewhere with FencingToken(value, name=..., backend=..., owner=...)"
        )
    if current is None:
        return
    if (current.lock, current.backend) != (offered.name, offered.backend):
        raise StaleTokenError(
            resource,
            offered,
            current.token,
            f"token minted for lock {offered.name!r} on {offered.backend}, but the resource "
            f"is fenced by lock {current.lock!r} on {current.backend}",
        )
    if int(offered) > current.token:
        return
    if int(offered) == current.token:
        if offered.owner == current.owner:
            return
        raise StaleTokenError(
            resource,
            offered,
            current.token,
            "the same number from another acquisition: the lock backend handed out a "
            "token twice (it lost data); refusing",
        )
    raise StaleTokenError(resource, offered, current.token)


class Guard(abc.ABC, Generic[ValueT]):
    """The storage side of fencing: a store whose mutations carry a token.

    Every mutation checks the token against the resource's fence with
    :func:`check_fence` and, if accepted, raises the fence and applies the change,
    as one atomic operation in the storage.

    .. versionadded:: 0.1
    """

    kind: ClassVar[str]

    @abc.abstractmethod
    async def write(self, resource: str, value: ValueT, *, token: FencingToken) -> None:
        """Store ``value`` under ``resource`` if ``token`` is accepted.

        Raises:
            StaleTokenError: the token is stale; nothing was written.
        """

    @abc.abstractmethod
    async def read(self, resource: str) -> ValueT | None:
        """The stored value, or ``None``."""

    @abc.abstractmethod
    async def fence(self, resource: str) -> Fence | None:
        """The highest token accepted for ``resource`` so far, or ``None``."""

    async def check(self, resource: str, *, token: FencingToken) -> None:
        """Accept ``token`` (raising the fence) without writing a value.

        Raises:
            StaleTokenError: the token is stale.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support check()")

    async def aclose(self) -> None:
        """Release what the guard opened itself. Idempotent."""

    async def __aenter__(self) -> Guard[ValueT]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
