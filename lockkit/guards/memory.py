"""A guard over an in-process dict: the reference for every other guard.

.. versionadded:: 0.1
"""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar, final

from .._core._errors import WriteConflictError
from .._core._names import validate_name
from .._core._token import FencingToken
from ..abc import Fence, Guard, GuardCapability, Versioned, check_fence

__all__ = ("MemoryGuard",)

ValueT = TypeVar("ValueT")


@final
class MemoryGuard(Guard[ValueT], Generic[ValueT]):
    """Values in a dict, each fenced by the highest token that wrote it and versioned.

    Check and write happen with no ``await`` in between, so they are atomic for every
    task of the event loop.

    .. versionadded:: 0.1
    """

    kind: ClassVar[str] = "memory"
    capabilities: ClassVar[frozenset[GuardCapability]] = frozenset(
        {GuardCapability.READ, GuardCapability.CHECK, GuardCapability.VERSIONED}
    )

    def __init__(self) -> None:
        self._values: dict[str, Versioned[ValueT]] = {}
        self._fences: dict[str, Fence] = {}
        #: Writes refused so far; handy in tests and demos.
        self.refused = 0

    def _accept(self, resource: str, token: FencingToken, expect_version: int | None) -> None:
        validate_name(resource, "resource")
        try:
            check_fence(resource, self._fences.get(resource), token)
            if expect_version is not None:
                stored = self._values.get(resource)
                current = 0 if stored is None else stored.version
                if current != expect_version:
                    raise WriteConflictError(resource, expect_version, current)
        except Exception:
            self.refused += 1
            raise
        self._fences[resource] = Fence(resource, int(token), token.owner, token.name, token.backend)

    async def write(
        self,
        resource: str,
        value: ValueT,
        *,
        token: FencingToken,
        expect_version: int | None = None,
    ) -> None:
        self._accept(resource, token, expect_version)
        stored = self._values.get(resource)
        self._values[resource] = Versioned(value, 1 if stored is None else stored.version + 1)

    async def check(self, resource: str, *, token: FencingToken) -> None:
        self._accept(resource, token, None)

    async def read(self, resource: str) -> ValueT | None:
        stored = self._values.get(resource)
        return None if stored is None else stored.value

    async def read_versioned(self, resource: str) -> Versioned[ValueT] | None:
        return self._values.get(resource)

    async def fence(self, resource: str) -> Fence | None:
        return self._fences.get(resource)

    def __repr__(self) -> str:
        return f"<MemoryGuard resources={len(self._values)}>"
