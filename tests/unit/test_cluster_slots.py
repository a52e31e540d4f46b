"""The Cluster slot map lockkit believes: each slot's newest claim among all nodes."""

from __future__ import annotations

from lockkit._drivers.redis.slots import SLOTS, SlotRange, merge, moved, parse_nodes

A, B, C = ("10.0.0.1", 7000), ("10.0.0.2", 7001), ("10.0.0.3", 7002)

# What a master paused past cluster-node-timeout says after it resumed, before it heard
# of the failover: it still serves 0-8191 at epoch 1 and calls B its replica.
STALE = """\
a1 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-8191
b2 10.0.0.2:7001@17001 slave a1 0 0 1 connected
c3 10.0.0.3:7002@17002 master - 0 0 2 connected 8192-16383
"""
# What the others say: B was promoted at epoch 3.
SETTLED = """\
a1 10.0.0.1:7000@17000 master,fail - 0 0 1 disconnected
b2 10.0.0.2:7001@17001 myself,master - 0 0 3 connected 0-8191
c3 10.0.0.3:7002@17002 master - 0 0 2 connected 8192-16383
"""


def test_parse_reads_masters_slots_and_every_address() -> None:
    claims, nodes = parse_nodes(STALE, asked=A)
    assert nodes == [A, B, C]
    assert [(c.epoch, c.start, c.end, c.node) for c in claims] == [
        (1, 0, 8191, A),
        (2, 8192, 16383, C),
    ]


def test_parse_skips_migrating_slots_and_nodes_without_address() -> None:
    text = (
        "a1 :0@0 myself,master - 0 0 0 connected 0-10\n"
        "b2 10.0.0.2:7001@17001,host-b master - 0 0 4 connected 11 [12->-a1] 13-20\n"
        "c3 10.0.0.3:7002@17002 handshake - 0 0 0 connected\n"
    )
    claims, nodes = parse_nodes(text, asked=A)
    assert nodes == [A, B]  # a node that does not know its address is the one asked
    assert [(c.start, c.end, c.node) for c in claims] == [(0, 10, A), (11, 11, B), (13, 20, B)]


def test_the_newest_epoch_wins_whoever_answered_first() -> None:
    stale, _ = parse_nodes(STALE, asked=A)
    settled, _ = parse_nodes(SETTLED, asked=B)
    expected = [SlotRange(0, 8191, B), SlotRange(8192, SLOTS - 1, C)]
    assert merge([stale, settled]) == expected
    assert merge([settled, stale]) == expected
    assert merge([stale]) == [SlotRange(0, 8191, A), SlotRange(8192, SLOTS - 1, C)]


def test_moved_sees_any_slot_changing_hands() -> None:
    before = [SlotRange(0, 8191, A), SlotRange(8192, SLOTS - 1, C)]
    assert not moved(before, list(before))
    assert moved(before, [SlotRange(0, 8191, B), SlotRange(8192, SLOTS - 1, C)])
    # one slot handed over is enough
    assert moved(before, [SlotRange(0, 8190, A), SlotRange(8191, SLOTS - 1, C)])
    # a slot nobody serves any more has changed hands too
    assert moved(before, [SlotRange(0, 8191, A)])
    # a slot newly served (none before) is no lease's business
    assert not moved([SlotRange(0, 10, A)], [SlotRange(0, 20, A)])
