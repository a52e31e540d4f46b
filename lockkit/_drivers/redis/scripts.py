"""The Lua scripts of the Redis lock and the keys they work on.

Scripts live in ``lockkit/_lua``. Those that walk a lock's queue are loaded with the
shared prelude ``_queue.lua`` in front of their body, so the FIFO rule ("find the oldest
live waiter, purge dead ones ahead of it, wake it") exists once; the SHA covers both.
The Redis guard's scripts (``guard_*.lua``) are loaded the same way behind
``guard_fence.lua``, the one Lua copy of the fence rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, final

from ..._core._backend import OwnerRecord, WaiterInfo
from .resp import Encoded, Script

__all__ = (
    "ACQUIRE",
    "EXTEND",
    "INSPECT",
    "REFRESH",
    "RELEASE",
    "SWEEP",
    "LockKeys",
    "decode_name",
    "encode_name",
    "inspect_records",
    "load",
    "name_scan",
    "source",
    "text",
)


def source(name: str) -> str:
    """The text of ``lockkit/_lua/{name}.lua``."""
    return resources.files("lockkit").joinpath("_lua", f"{name}.lua").read_text("utf-8")


def load(name: str, *, prelude: bool | str = False) -> Script:
    """The script ``lockkit/_lua/{name}.lua``, after ``_queue.lua`` if ``prelude`` is
    True, or after ``lockkit/_lua/{prelude}.lua`` if it names one."""
    if prelude is True:
        prelude = "_queue"
    return Script(name, (source(prelude) if prelude else "") + source(name))


ACQUIRE = load("acquire", prelude=True)
RELEASE = load("release", prelude=True)
SWEEP = load("sweep", prelude=True)
EXTEND = load("extend")
REFRESH = load("refresh")
INSPECT = load("inspect")


def encode_name(name: str) -> str:
    """``name`` with ``%``, ``{`` and ``}`` percent-encoded: distinct names give
    distinct keys, and none can pick its own Cluster hash tag."""
    return name.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


_ENCODED = re.compile(r"%(25|7B|7D)")
_DECODED = {"25": "%", "7B": "{", "7D": "}"}
_GLOB = re.compile(r"([*?\[\]\\])")


def decode_name(encoded: str) -> str:
    """The name :func:`encode_name` made ``encoded`` from."""
    return _ENCODED.sub(lambda m: _DECODED[m.group(1)], encoded)


def text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def name_scan(prefix: str, name_prefix: str) -> tuple[str, Callable[[bytes | str], str | None]]:
    """The SCAN pattern for the owner and queue keys of the names starting with
    ``name_prefix``, and a function giving the name of a key found (None for another)."""
    head = f"{prefix}{{"
    pattern = _GLOB.sub(r"\\\1", head + encode_name(name_prefix)) + "*}:[oq]"

    def name_of(key: bytes | str) -> str | None:
        found = text(key)
        if not (found.startswith(head) and found.endswith(("}:o", "}:q"))):
            return None
        name = decode_name(found[len(head) : -3])
        return name if name.startswith(name_prefix) else None

    return pattern, name_of


def inspect_records(
    reply: Sequence[Any], owner: str | None
) -> tuple[OwnerRecord | None, tuple[WaiterInfo, ...]]:
    """The holder's record (if the record key names ``owner``) and the queue, from the
    reply of ``inspect.lua`` given all five keys."""
    record = None
    if owner is not None and len(reply) > 4 and reply[4]:
        of, _, data = text(reply[4]).partition("\n")
        record = OwnerRecord.decode(data) if of == owner else None
    waiters = [
        WaiterInfo(
            text(reply[i]).partition(":")[2],
            int(float(reply[i + 1])),
            OwnerRecord.decode(reply[i + 2] or None),
        )
        for i in range(5, len(reply) - 2, 3)
    ]
    return record, tuple(waiters)


@final
class LockKeys:
    """The keys of one lock (one Cluster slot: the encoded name is the hash tag), also
    pre-encoded for the wire in the order the scripts take them."""

    __slots__ = ("base", "encoded", "fence", "liveness", "owner", "queue", "record")

    def __init__(self, prefix: str, name: str) -> None:
        self.base = base = f"{prefix}{{{encode_name(name)}}}"
        #: the holder's owner id, with the lease as its expiry
        self.owner = base + ":o"
        #: the last token handed out
        self.fence = base + ":f"
        #: the waiters, oldest first
        self.queue = base + ":q"
        #: until when each waiting client is alive, and each waiter's owner record
        self.liveness = base + ":l"
        #: the last holder's owner id and owner record (who holds, for operators)
        self.record = base + ":h"
        self.encoded = Encoded(self.owner, self.fence, self.queue, self.liveness, self.record)

    def channel(self, client_id: str) -> bytes:
        """The sharded channel on which ``client_id``'s waiters for this lock are woken."""
        return f"{self.base}:c:{client_id}".encode()

    def __repr__(self) -> str:
        return f"<LockKeys {self.base!r}>"
