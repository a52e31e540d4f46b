"""Fences and guards: the storage side of fencing.

A guard refuses a write whose token is older than one it already accepted for the same
resource. :func:`check_fence` is the one acceptance rule; every guard applies it
atomically in its own storage.

Public through :mod:`lockkit.abc`.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Callable
from typing import ClassVar, Generic, TypeVar, final

from ._errors import StaleTokenError, WriteConflictError
from ._token import FencingToken

__all__ = ("Fence", "Guard", "GuardCapability", "Versioned", "check_fence")

ValueT = TypeVar("ValueT")


class GuardCapability(enum.Enum):
    """Operations a guard offers beyond ``write`` and ``fence``; the guard conformance
    checks for an operation run only where it is declared, and calling an operation a
    guard does not declare raises :class:`NotImplementedError`.

    .. versionadded:: 0.1
    """

    #: ``read(resource)`` returns the stored value.
    READ = "read"
    #: ``check(resource, token=...)`` raises the fence without writing a value.
    CHECK = "check"
    #: ``read_versioned(resource)`` returns the value with its version, and
    #: ``write(..., expect_version=v)`` writes only if the version is still ``v``
    #: (so :meth:`Guard.update` can do a read-modify-write that loses no update).
    VERSIONED = "versioned"


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Versioned(Generic[ValueT]):
    """A stored value and its version: 1 after the first write, one more after each
    accepted write. A resource with no value is at version 0.

    .. versionadded:: 0.1
    """

    value: ValueT
    version: int


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
    capabilities: ClassVar[frozenset[GuardCapability]] = frozenset()

    @abc.abstractmethod
    async def write(
        self,
        resource: str,
        value: ValueT,
        *,
        token: FencingToken,
        expect_version: int | None = None,
    ) -> None:
        """Store ``value`` under ``resource`` if ``token`` is accepted and, when
        ``expect_version`` is given (guards declaring :attr:`GuardCapability.VERSIONED`),
        only if the stored version is still that one (0: no value yet).

        Raises:
            StaleTokenError: the token is stale; nothing was written.
            WriteConflictError: the version changed since it was read; nothing was
                written.
        """

    async def read(self, resource: str) -> ValueT | None:
        """The stored value, or ``None`` (guards declaring :attr:`GuardCapability.READ`)."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot read values back (see its capabilities)"
        )

    async def read_versioned(self, resource: str) -> Versioned[ValueT] | None:
        """The stored value with its version, or ``None`` if there is none (guards
        declaring :attr:`GuardCapability.VERSIONED`)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no versions (see its capabilities)")

    async def update(
        self,
        resource: str,
        change: Callable[[ValueT | None], ValueT],
        *,
        token: FencingToken,
        attempts: int = 16,
    ) -> ValueT:
        """Read-modify-write under the fence that loses no update: read the value and
        its version, compute ``change(value)`` (``None`` if there is none), and write
        the result only if the token is accepted *and* nothing was written in between;
        on a conflict, read and compute again (up to ``attempts`` times). Returns the
        value written. Needs :attr:`GuardCapability.VERSIONED`.

        A token check alone cannot see this lost update: a holder reads, a newer holder
        (its lock granted while the first was paused, or after a failover lost the
        first's grant) reads the same value; the first writes, then the newer one
        writes a value computed from what it read before, and both writes carry tokens
        the guard accepts. With ``update`` the second write is refused, and the newer
        holder recomputes from the first one's result.

        Raises:
            StaleTokenError: the token is stale; nothing was written.
            WriteConflictError: still conflicting after ``attempts`` tries.
        """
        if GuardCapability.VERSIONED not in self.capabilities:
            raise NotImplementedError(f"{type(self).__name__} keeps no versions")
        for attempt in range(attempts):
            stored = await self.read_versioned(resource)
            value = change(None if stored is None else stored.value)
            try:
                await self.write(
                    resource,
                    value,
                    token=token,
                    expect_version=0 if stored is None else stored.version,
                )
            except WriteConflictError:
                if attempt == attempts - 1:
                    raise
                continue
            return value
        raise AssertionError("unreachable")  # pragma: no cover

    @abc.abstractmethod
    async def fence(self, resource: str) -> Fence | None:
        """The highest token accepted for ``resource`` so far, or ``None``."""

    async def check(self, resource: str, *, token: FencingToken) -> None:
        """Accept ``token`` (raising the fence) without writing a value (guards
        declaring :attr:`GuardCapability.CHECK`).

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
