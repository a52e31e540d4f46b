"""The Cluster's slot map as a majority of its nodes would settle it.

A master that was paused or cut off past ``cluster-node-timeout`` and failed over goes
on claiming its slots, and answering its clients, until it hears of the newer
configuration. So lockkit never takes one node's word for who serves a slot: it reads
``CLUSTER NODES`` from every node it knows and, slot by slot, believes the claim made
with the highest configuration epoch (the rule the nodes themselves settle conflicts
by). :func:`moved` says which slots changed hands between two maps.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import NamedTuple

__all__ = ("SLOTS", "Claim", "SlotRange", "merge", "moved", "parse_nodes")

#: Slots in a Redis Cluster.
SLOTS = 16384

Node = tuple[str, int]


class Claim(NamedTuple):
    """One master's claim to a range of slots, as one node reports it."""

    epoch: int
    start: int
    end: int
    node: Node


class SlotRange(NamedTuple):
    """Slots ``start``..``end`` (inclusive) are served by ``node``."""

    start: int
    end: int
    node: Node


def parse_nodes(text: str, asked: Node) -> tuple[list[Claim], list[Node]]:
    """The slot claims of the masters in one ``CLUSTER NODES`` reply, and the address
    of every node it lists (masters and replicas: all of them can be asked next time).
    ``asked`` stands in for a node that does not know its own address yet."""
    claims: list[Claim] = []
    nodes: list[Node] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        flags = fields[2].split(",")
        if "noaddr" in flags or "handshake" in flags:
            continue
        host, _, port = fields[1].split("@", 1)[0].rpartition(":")
        node = (host or asked[0], int(port)) if port.isdigit() and port != "0" else asked
        nodes.append(node)
        if "master" not in flags:
            continue
        epoch = int(fields[6])
        for token in fields[8:]:
            if token.startswith("["):  # a slot being migrated or imported
                continue
            low, _, high = token.partition("-")
            claims.append(Claim(epoch, int(low), int(high or low), node))
    return claims, nodes


def merge(views: Iterable[Sequence[Claim]]) -> list[SlotRange]:
    """Slot ranges and their masters: for each slot, the claim with the highest epoch
    among every node's view wins. Slots nobody claims are left out."""
    owner: list[Node | None] = [None] * SLOTS
    # painted in rising epoch order: a later (newer) claim overwrites an older one
    for claim in sorted(itertools.chain.from_iterable(views), key=lambda c: c.epoch):
        owner[claim.start : claim.end + 1] = [claim.node] * (claim.end - claim.start + 1)
    ranges: list[SlotRange] = []
    slot = 0
    for node, run in itertools.groupby(owner):
        length = sum(1 for _ in run)
        if node is not None:
            ranges.append(SlotRange(slot, slot + length - 1, node))
        slot += length
    return ranges


def moved(old: Sequence[SlotRange], new: Sequence[SlotRange]) -> bool:
    """Whether any slot served in ``old`` is served by another master (or none) in
    ``new``."""
    if old == new:
        return False
    owner: list[Node | None] = [None] * SLOTS
    for start, end, node in new:
        owner[start : end + 1] = [node] * (end - start + 1)
    return any(owner[slot] != node for start, end, node in old for slot in range(start, end + 1))
