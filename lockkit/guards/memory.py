"""A guard over an in-process dict: the reference for every other guard.

.. versionadded:: 0.1
"""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar, final

from .._core._names import validate_name
from .._core._token import FencingToken
from ..abc import Fence, Guard, GuardCapability, check_fence

__all__ = ("MemoryGuard",)

ValueT = TypeVar("ValueT")


@final
class MemoryGuard(Guard[ValueT], Generic[ValueT]):
    """Values in a dict, each fenced by the highest token that wrote it.

    Check and write happen with no ``await`` in between, so they are atomic for every
    task of the event loop.

    .. versionadded:: 0.1
    """

    kind: ClassVar[str] = "memory"
    capabilities: ClassVar[frozenset[GuardCapability]] = frozenset(
        {GuardCapability.READ, GuardCapability.CHECK}
    )

    def __init__(self) -> None:
        self._values: dict[str, ValueT] = {}
        self._fences: dict[str, Fence] = {}
        #: Writes refused so far; handy in tests and demos.
        self.refused = 0

    def _accept(self, resource: str, token: FencingToken) -> None:
        validate_name(resource, "resource")
        try:
            check_fence(resource, self._fences.get(resource), token)
        except Exception:
            self.refused += 1
            raise
        self._fences[resource] = Fence(resource, int(token), token.owner, token.name, token.backend)

    async def write(self, resource: str, value: ValueT, *, token: FencingToken) -> None:
        self._accept(resource, token)
        self._values[resource] = value

    async def check(self, resource: str, *, token: FencingToken) -> None:
        self._accept(resource, token)

    async def read(self, resource: str) -> ValueT | None:
        return self._values.get(resource)

    async def fence(self, resource: str) -> Fence | None:
        return self._fences.get(resource)

    def __repr__(self) -> str:
        return f"<MemoryGuard resources={len(self._values)}>"
