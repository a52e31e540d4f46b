"""Smoke tests: the Kafka broker serves plain and transactional round trips."""

from __future__ import annotations

import importlib
import uuid

import anyio
import pytest

# aiokafka ships no type information; importing it this way keeps mypy quiet whether or
# not the project's mypy configuration lists it among the untyped modules.
aiokafka = importlib.import_module("aiokafka")
KafkaError = importlib.import_module("aiokafka.errors").KafkaError
# marks the futures aiokafka leaves failed and unawaited on a fenced producer as seen
_retrieve_failures = importlib.import_module("lockkit.guards.kafka")._retrieve_failures
AIOKafkaConsumer = aiokafka.AIOKafkaConsumer
AIOKafkaProducer = aiokafka.AIOKafkaProducer

pytestmark = pytest.mark.kafka


def unique(prefix: str) -> str:
    return f"smoke-{prefix}-{uuid.uuid4().hex[:12]}"


async def read_values(bootstrap: str, topic: str, count: int, **options) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **options,
    )
    await consumer.start()
    try:
        values: list[bytes] = []
        with anyio.fail_after(30):
            while len(values) < count:
                message = await consumer.getone()
                assert message.value is not None
                values.append(message.value)
        return values
    finally:
        await consumer.stop()


async def test_plain_round_trip(kafka_broker):
    assert kafka_broker.url == f"kafka://127.0.0.1:{kafka_broker.port}"
    topic = unique("plain")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k")
    finally:
        await producer.stop()
    assert await read_values(kafka_broker.bootstrap_servers, topic, 1) == [b"hello"]


async def test_transactional_round_trip(kafka_broker):
    topic = unique("txn")
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        transactional_id=unique("producer"),
        enable_idempotence=True,
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"first", headers=[("fence", b"1")])
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"second", headers=[("fence", b"2")])
    finally:
        await producer.stop()
    committed = await read_values(
        kafka_broker.bootstrap_servers, topic, 2, isolation_level="read_committed"
    )
    assert committed == [b"first", b"second"]


async def test_a_new_producer_fences_the_old_one(kafka_broker):
    """Two producers with one transactional id: the broker fences the older one."""
    topic = unique("fence")
    transactional_id = unique("zombie")
    old = AIOKafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap_servers, transactional_id=transactional_id
    )
    new = AIOKafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap_servers, transactional_id=transactional_id
    )
    await old.start()
    try:
        async with old.transaction():
            await old.send_and_wait(topic, b"old")
        await new.start()
        try:
            with pytest.raises(KafkaError):
                async with old.transaction():
                    await old.send_and_wait(topic, b"zombie")
            async with new.transaction():
                await new.send_and_wait(topic, b"new")
        finally:
            await new.stop()
    finally:
        _retrieve_failures(old)  # the fenced producer's orphaned futures, once failed
        await old.stop()
        _retrieve_failures(old)
    committed = await read_values(
        kafka_broker.bootstrap_servers, topic, 2, isolation_level="read_committed"
    )
    assert committed == [b"old", b"new"]
