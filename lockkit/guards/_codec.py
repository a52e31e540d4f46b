"""How storage guards turn values into bytes and back.

Every guard over real storage takes ``codec=``: :data:`JSON` (the default: anything
:func:`json.dumps` takes, given back as :func:`json.loads` reads it), :data:`TEXT`
(``str``, UTF-8) or :data:`RAW` (``bytes`` as they are). A codec of your own is any
object with ``encode(value) -> bytes`` and ``decode(data) -> value``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import json
from typing import Any, Final, Protocol, TypeVar, final

__all__ = ("JSON", "RAW", "TEXT", "Codec")

ValueT = TypeVar("ValueT")


class Codec(Protocol[ValueT]):
    """Turns a guard's values into bytes for the storage, and back."""

    def encode(self, value: ValueT) -> bytes: ...
    def decode(self, data: bytes) -> ValueT: ...


@final
class _Json:
    def encode(self, value: Any) -> bytes:
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        except TypeError as exc:
            raise TypeError(
                f"the guard's JSON codec cannot store {type(value).__name__!r} values "
                "(pass codec=lockkit.guards.RAW for bytes, or a codec of your own)"
            ) from exc

    def decode(self, data: bytes) -> Any:
        return json.loads(data)

    def __repr__(self) -> str:
        return "JSON"


@final
class _Text:
    def encode(self, value: str) -> bytes:
        if not isinstance(value, str):
            raise TypeError(f"the guard's TEXT codec stores str, not {type(value).__name__}")
        return value.encode()

    def decode(self, data: bytes) -> str:
        return data.decode()

    def __repr__(self) -> str:
        return "TEXT"


@final
class _Raw:
    def encode(self, value: bytes) -> bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"the guard's RAW codec stores bytes, not {type(value).__name__}")
        return bytes(value)

    def decode(self, data: bytes) -> bytes:
        return data

    def __repr__(self) -> str:
        return "RAW"


#: Values as JSON text (the default).
JSON: Final[Codec[Any]] = _Json()
#: ``str`` values, stored as UTF-8.
TEXT: Final[Codec[str]] = _Text()
#: ``bytes`` values, stored as they are.
RAW: Final[Codec[bytes]] = _Raw()
