"""Paths and node names: a lock name as one path segment, and Curator's lock nodes
(``_c_<uuid>-lock-<10-digit sequence>``, see :func:`node_prefix`)."""

from __future__ import annotations

import re
import urllib.parse
import uuid
from collections.abc import Iterable
from typing import Final

__all__ = ("LOCK_MARK", "decode_name", "encode_name", "lock_nodes", "node_prefix", "owner_of")

#: Curator's lock-node marker: ``_c_<uuid>-lock-<10-digit sequence>``.
LOCK_MARK: Final = "lock-"
_NODE = re.compile(r"^(?:_c_([0-9a-f-]{36})-)?.*lock-(\d{10})$")
#: Characters kept as they are in a path segment; every other one is %-encoded.
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:~")


def encode_name(name: str, *, at_top: bool = False) -> str:
    """One path segment for lock ``name``: characters outside ``[A-Za-z0-9-_.:~]`` are
    %-encoded (UTF-8), so ``/`` cannot split it and no two names meet; ``.`` and ``..``
    are encoded whole. ``at_top``: the segment sits at the root of the tree, where
    ``zookeeper`` is the server's own."""
    out = "".join(
        c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
        for c in name
    )
    if out in (".", "..") or (at_top and out == "zookeeper"):
        out = f"%{ord(out[0]):02X}{out[1:]}"
    return out


def decode_name(segment: str) -> str:
    """The lock name :func:`encode_name` made ``segment`` from."""
    return urllib.parse.unquote(segment, encoding="utf-8", errors="surrogatepass")


def node_prefix(owner: str) -> str:
    """The name prefix of ``owner``'s node (Curator's protected mode): ``_c_<uuid>-lock-``.
    A lockkit owner id (32 hex digits) is the uuid itself; any other is hashed into one."""
    try:
        ident = uuid.UUID(hex=owner) if len(owner) == 32 else uuid.uuid5(uuid.NAMESPACE_URL, owner)
    except ValueError:
        ident = uuid.uuid5(uuid.NAMESPACE_URL, owner)
    return f"_c_{ident}-{LOCK_MARK}"


def lock_nodes(children: Iterable[str]) -> list[tuple[int, str]]:
    """``(sequence, name)`` of the lock nodes among ``children``, in queue order."""
    nodes = [
        (int(child[-10:]), child)
        for child in children
        if child[-15:-10] == LOCK_MARK and child[-10:].isdigit()
    ]
    nodes.sort()
    return nodes


def owner_of(node: str) -> str:
    """The owner id a node name carries (its uuid as 32 hex digits), else the name."""
    match = _NODE.match(node)
    if match is None or match.group(1) is None:
        return node
    return match.group(1).replace("-", "")
