"""TokenFilter over an AIOKafkaConsumer, on a topic written without transactions."""

from __future__ import annotations

import contextlib

import anyio
import pytest

from lockkit.guards.kafka import TokenFilter, token_headers, token_of

from .helpers import aiokafka, consumer, token, unique

pytestmark = pytest.mark.kafka


async def test_the_filter_drops_stale_records_from_a_plain_topic(kafka_broker) -> None:
    """Two holders of one lock write to a plain topic, the paused old one last; a record
    without headers comes from a writer that takes no lock. The filter keeps the newer
    holder's records and drops the older holder's late ones."""
    bootstrap = kafka_broker.bootstrap_servers
    lock, topic = unique("lock"), unique("plain")
    old, new = token(4, lock, owner="old"), token(5, lock, owner="new")
    writes = [
        (b"stock", b"old-1", old),
        (b"stock", b"new-1", new),
        (b"price", b"old-price", old),  # another key: no newer write there yet
        (b"stock", b"old-late", old),  # the paused holder, after the newer one
        (b"stock", b"unfenced", None),
        (b"stock", b"new-2", new),
        (b"price", b"old-price-late", old),  # still the newest token for this key
    ]
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value, held in writes:
            headers = token_headers(held) if held is not None else None
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()

    for unfenced, expected in [
        ("pass", [b"old-1", b"new-1", b"old-price", b"unfenced", b"new-2", b"old-price-late"]),
        ("drop", [b"old-1", b"new-1", b"old-price", b"new-2", b"old-price-late"]),
    ]:
        tokens = TokenFilter(unfenced=unfenced)  # type: ignore[arg-type]
        kept = []
        async with consumer(bootstrap, topic) as reader:
            with anyio.fail_after(30):
                async with contextlib.aclosing(tokens.records(reader)) as records:
                    async for record in records:
                        kept.append(record)
                        if record.value == b"old-price-late":  # the last write, kept
                            break
        assert tokens.accepted + tokens.dropped == len(writes)
        assert [r.value for r in kept] == expected, unfenced
        fence = tokens.fence(topic, "stock")
        assert fence is not None and (fence.token, fence.owner) == (5, "new")
        late = next(r for r in kept if r.value == b"new-2")
        late_token = token_of(late)
        assert late_token is not None and late_token.same_acquisition(new)
