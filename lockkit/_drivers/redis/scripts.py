"""The Lua scripts of the Redis lock and the keys they work on.

Scripts live in ``lockkit/_lua``. Those that walk a lock's queue are loaded with the
shared prelude ``_queue.lua`` in front of their body, so the FIFO rule ("find the oldest
live waiter, purge dead ones ahead of it, wake it") exists once; the SHA covers both.
The Redis guard's scripts (``guard_*.lua``) are loaded the same way behind
``guard_fence.lua``, the one Lua copy of the fence rule.
"""

from __future__ import annotations

from importlib import resources
from typing import final

from .resp import Encoded, Script

__all__ = (
    "ACQUIRE",
    "EXTEND",
    "INSPECT",
    "REFRESH",
    "RELEASE",
    "LockKeys",
    "encode_name",
    "load",
    "source",
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
EXTEND = load("extend")
REFRESH = load("refresh")
INSPECT = load("inspect")


def encode_name(name: str) -> str:
    """``name`` with ``%``, ``{`` and ``}`` percent-encoded: distinct names give
    distinct keys, and none can pick its own Cluster hash tag."""
    return name.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


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
