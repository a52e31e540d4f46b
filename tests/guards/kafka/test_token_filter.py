"""TokenFilter alone (records built here) and the guard's construction: no broker."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from lockkit import ConfigurationError, FencingToken
from lockkit.guards import RAW
from lockkit.guards.kafka import (
    HEADER_LOCK,
    HEADER_TOKEN,
    KafkaGuard,
    TokenFilter,
    token_headers,
    token_of,
)


@dataclasses.dataclass(frozen=True)
class Record:
    topic: str
    key: bytes | None
    headers: list[tuple[str, bytes]]
    value: bytes = b""


def record(value: int | None, owner: str = "a", key: bytes | None = b"k", lock: str = "L"):
    if value is None:
        return Record("t", key, [("other", b"x")])
    token = FencingToken(value, name=lock, backend="redis", owner=owner)
    return Record("t", key, token_headers(token))


def test_stale_records_are_dropped_per_key() -> None:
    tokens = TokenFilter()
    decisions = [
        tokens.accept(r)
        for r in [
            record(1),
            record(3, owner="c"),
            record(2, owner="b"),  # older than 3 for k
            record(3, owner="c"),  # the same acquisition again
            record(3, owner="x"),  # the same number from another acquisition
            record(1, key=b"other"),  # another key has its own fence
            record(9, lock="M"),  # another lock's token on a fenced key
            record(4, key=None),  # no key: judged per topic
            record(2, key=None),
        ]
    ]
    assert decisions == [True, True, False, True, False, True, False, True, False]
    assert (tokens.accepted, tokens.dropped) == (5, 4)
    fence = tokens.fence("t", "k")
    assert fence is not None and (fence.token, fence.owner, fence.lock) == (3, "c", "L")
    assert fence.resource == "t:k" and fence.backend == "redis"
    assert tokens.fence("t", None) is not None and tokens.fence("u", b"k") is None


def test_records_without_token_headers_pass_or_drop_as_told() -> None:
    assert TokenFilter().accept(record(None))
    drop = TokenFilter(unfenced="drop")
    assert not drop.accept(record(None)) and drop.dropped == 1
    with pytest.raises(ConfigurationError):
        TokenFilter(unfenced="keep")  # type: ignore[arg-type]


def test_broken_token_headers_are_dropped() -> None:
    tokens = TokenFilter()
    assert not tokens.accept(Record("t", b"k", [(HEADER_TOKEN, b"12x")]))
    assert not tokens.accept(Record("t", b"k", [(HEADER_TOKEN, b"12")]))  # no owner/lock
    assert not tokens.accept(Record("t", b"k", [(HEADER_TOKEN, b"-1"), (HEADER_LOCK, b"L")]))
    assert tokens.dropped == 3 and tokens.fence("t", b"k") is None
    with pytest.raises(ValueError):
        token_of(Record("t", b"k", [(HEADER_TOKEN, b"12")]))


def test_token_of_rebuilds_the_token() -> None:
    token = FencingToken(12, name="L", backend="etcd", owner="o-1")
    rebuilt = token_of(Record("t", None, [("x", b"y"), *token_headers(token)]))
    assert rebuilt is not None and rebuilt.same_acquisition(token)
    assert token_of(Record("t", None, [])) is None
    with pytest.raises(TypeError):
        token_headers(12)  # type: ignore[arg-type]


async def test_records_wraps_any_async_iterable() -> None:
    async def source() -> AsyncIterator[Record]:
        for value in (1, 2, 5, 4, 6):
            yield record(value, owner=f"o{value}")

    tokens = TokenFilter()
    kept = [token_of(r) async for r in tokens.records(source())]
    assert [int(t) for t in kept if t is not None] == [1, 2, 5, 6]


def test_guard_construction() -> None:
    assert KafkaGuard("a:1, b:2").bootstrap_servers == ["a:1", "b:2"]
    assert KafkaGuard("kafka://a,b:2").bootstrap_servers == ["a:9092", "b:2"]
    assert KafkaGuard(["a:1"]).transactional_id("orders") == "lockkit.orders"
    assert KafkaGuard("a:1", prefix="svc/").transactional_id("x") == "svc/x"
    with pytest.raises(ConfigurationError):
        KafkaGuard("kafka://user:secret@a:1")
    with pytest.raises(ConfigurationError):
        KafkaGuard("redis://a:1")
    with pytest.raises(ConfigurationError):
        KafkaGuard("a:1", transactional_id="mine")
    with pytest.raises(ConfigurationError):
        KafkaGuard("")
    guard = KafkaGuard("a:1", codec=RAW, sasl_plain_password="secret")
    assert "secret" not in repr(guard)


def test_producer_takes_only_a_fencing_token() -> None:
    guard = KafkaGuard("a:1")
    with pytest.raises(TypeError):
        guard.producer(5)  # type: ignore[arg-type]
    producer = guard.producer(FencingToken(5, name="L", backend="redis", owner="o"))
    assert "lockkit.L" in repr(producer) and not producer.fenced
