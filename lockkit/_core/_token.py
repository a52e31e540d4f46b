"""Fencing tokens: integers that remember which lock and which acquisition minted them."""

from __future__ import annotations

from typing import Any, final

__all__ = ("FencingToken",)


@final
class FencingToken(int):
    """A fencing token: an ``int`` that strictly increases from one holder of a lock to
    the next, plus the identity of the acquisition that received it.

    It compares, hashes and serialises as the plain integer, so it can be stored in a
    database column or sent in a header as is. The extra attributes let a guard refuse
    a token minted for another lock, and tell two acquisitions apart if a backend that
    lost data ever hands out the same number twice.

    A token received from elsewhere (another process, an HTTP header) is rebuilt with
    ``FencingToken(value, name=..., backend=..., owner=...)``.

    Attributes:
        name: the lock name the token was minted for.
        backend: the backend kind that minted it (``"memory"``, ``"redis"``, ...).
        owner: the id of the acquisition that holds it; unique per acquisition.

    .. versionadded:: 0.1
    """

    name: str
    backend: str
    owner: str

    def __new__(cls, value: int, *, name: str, backend: str, owner: str) -> FencingToken:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"a fencing token value must be an int, not {type(value).__name__}")
        if value < 0:
            raise ValueError(f"a fencing token value cannot be negative, got {value}")
        self = super().__new__(cls, value)
        self.name = name
        self.backend = backend
        self.owner = owner
        return self

    def same_acquisition(self, other: FencingToken) -> bool:
        """True if both tokens belong to one acquisition of one lock."""
        return (
            int(self) == int(other)
            and self.owner == other.owner
            and self.name == other.name
            and self.backend == other.backend
        )

    def __repr__(self) -> str:
        return (
            f"FencingToken({int(self)}, name={self.name!r}, backend={self.backend!r}, "
            f"owner={self.owner[:12]!r})"
        )

    __str__ = int.__repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (int(self), self.name, self.backend, self.owner))


def _rebuild(value: int, name: str, backend: str, owner: str) -> FencingToken:
    return FencingToken(value, name=name, backend=backend, owner=owner)
