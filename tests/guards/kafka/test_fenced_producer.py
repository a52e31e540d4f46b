"""The fenced producer against a real broker: the next holder's producer fences the
previous one, whose open transaction is aborted; records carry the token."""

from __future__ import annotations

import json

import pytest

from lockkit import StaleTokenError
from lockkit.guards import RAW
from lockkit.guards.kafka import (
    HEADER_BACKEND,
    HEADER_LOCK,
    HEADER_OWNER,
    HEADER_TOKEN,
    KafkaGuard,
    ProducerFencedError,
    token_of,
)

from .helpers import as_another_process, no_loop_errors, read_until, token, unique

pytestmark = pytest.mark.kafka


def fenced_by_broker(error: BaseException) -> bool:
    from aiokafka.errors import ProducerFenced

    return isinstance(error, ProducerFencedError) and isinstance(error.__cause__, ProducerFenced)


async def test_records_carry_token_owner_and_lock(kafka_broker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    lock, topic = unique("lock"), unique("topic")
    async with no_loop_errors(), KafkaGuard(bootstrap) as guard:
        held = token(7, lock, owner="acq-1", backend="redis")
        async with guard.producer(held) as producer:
            assert producer.transactional_id == f"lockkit.{lock}"
            sent = await producer.send(
                topic, {"stock": 3}, key="item:1", headers=[("trace", b"t-1")]
            )
            assert sent.topic == topic and sent.offset >= 0
        [record] = await read_until(bootstrap, topic, b'{"stock":3}')
    headers = dict(record.headers)
    assert headers[HEADER_TOKEN] == b"7"
    assert headers[HEADER_OWNER] == b"acq-1"
    assert headers[HEADER_LOCK] == lock.encode()
    assert headers[HEADER_BACKEND] == b"redis"
    assert headers["trace"] == b"t-1"
    assert record.key == b"item:1"
    assert json.loads(record.value) == {"stock": 3}
    rebuilt = token_of(record)
    assert rebuilt is not None and rebuilt.same_acquisition(held)


async def test_zombie_pending_transaction_is_aborted(kafka_broker) -> None:
    """A has records in an open transaction when B's producer starts: the broker aborts
    A's transaction, A's commit raises, and a read_committed reader never sees A's
    records."""
    bootstrap = kafka_broker.bootstrap_servers
    lock, topic = unique("lock"), unique("topic")
    async with no_loop_errors(), KafkaGuard(bootstrap, codec=RAW) as guard:
        async with guard.producer(token(1, lock, owner="a")) as a:
            await a.send(topic, b"a-committed", key="k")
            with pytest.raises(ProducerFencedError) as caught:
                async with a.transaction():
                    await a.send(topic, b"a-pending-1", key="k")
                    await a.send(topic, b"a-pending-2", key="k")
                    with as_another_process():
                        async with guard.producer(token(2, lock, owner="b")) as b:
                            await b.send(topic, b"b-1", key="k")
                    # B is closed again; A's transaction was aborted when B started
            assert fenced_by_broker(caught.value), repr(caught.value.__cause__)
            error = caught.value
            assert isinstance(error, StaleTokenError) and error.current is None
            assert int(error.offered) == 1 and error.resource == f"lockkit.{lock}"
            assert a.fenced
            # known fenced: refused at once, without the broker
            with pytest.raises(ProducerFencedError):
                await a.send(topic, b"a-after", key="k")
        async with guard.producer(token(3, lock, owner="c")) as c:
            await c.send(topic, b"end", key="k")
        records = await read_until(bootstrap, topic, b"end")
    assert [r.value for r in records] == [b"a-committed", b"b-1", b"end"]


async def test_zombie_idle_producer_is_fenced_on_its_next_send(kafka_broker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    lock, topic = unique("lock"), unique("topic")
    async with no_loop_errors(), KafkaGuard(bootstrap, codec=RAW) as guard:
        a = guard.producer(token(10, lock, owner="a"))
        b = guard.producer(token(11, lock, owner="b"))
        async with a:
            await a.send(topic, b"a-1", key="k")
            with as_another_process():
                await b.start()
            try:
                await b.send(topic, b"b-1", key="k")
                with pytest.raises(ProducerFencedError) as caught:
                    await a.send(topic, b"a-2", key="k")
                assert fenced_by_broker(caught.value)
                await b.send(topic, b"end", key="k")
            finally:
                await b.aclose()
        records = await read_until(bootstrap, topic, b"end")
    assert [r.value for r in records] == [b"a-1", b"b-1", b"end"]


async def test_a_token_older_than_one_used_here_is_refused_locally(kafka_broker) -> None:
    """The process remembers the newest token it used per lock: an older one (or the
    same number from another acquisition) does not even start a producer, so it cannot
    fence the newer holder."""
    bootstrap = kafka_broker.bootstrap_servers
    lock, topic = unique("lock"), unique("topic")
    async with no_loop_errors(), KafkaGuard(bootstrap, codec=RAW) as guard:
        async with guard.producer(token(5, lock, owner="new")) as new:
            with pytest.raises(StaleTokenError) as caught:
                async with guard.producer(token(4, lock, owner="old")):
                    pass
            assert (int(caught.value.offered), caught.value.current) == (4, 5)
            with pytest.raises(StaleTokenError, match="handed out a token twice"):
                async with guard.producer(token(5, lock, owner="other")):
                    pass
            # the newer holder was not fenced by the refused ones
            await new.send(topic, b"end", key="k")
            assert not new.fenced
        # the same acquisition may open its producer again
        async with guard.producer(token(5, lock, owner="new")) as again:
            await again.send(topic, b"again", key="k")
        # another KafkaGuard object in this process knows it too
        async with KafkaGuard(bootstrap) as other:
            with pytest.raises(StaleTokenError):
                await other.producer(token(3, lock, owner="old")).start()
        records = await read_until(bootstrap, topic, b"again")
    assert [r.value for r in records] == [b"end", b"again"]


async def test_a_newer_token_in_this_process_refuses_the_older_producer(kafka_broker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    lock, topic = unique("lock"), unique("topic")
    async with no_loop_errors(), KafkaGuard(bootstrap, codec=RAW) as guard:
        async with guard.producer(token(1, lock, owner="a")) as a:
            async with guard.producer(token(2, lock, owner="b")) as b:
                with pytest.raises(StaleTokenError) as caught:
                    await a.send(topic, b"a", key="k")
                assert not isinstance(caught.value, ProducerFencedError)  # refused here
                await b.send(topic, b"end", key="k")
        records = await read_until(bootstrap, topic, b"end")
    assert [r.value for r in records] == [b"end"]


async def test_an_aborted_block_commits_nothing(kafka_broker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    lock, topic = unique("lock"), unique("topic")
    async with no_loop_errors(), KafkaGuard(bootstrap, codec=RAW) as guard:
        async with guard.producer(token(1, lock)) as producer:
            with pytest.raises(RuntimeError):
                async with producer.transaction():
                    await producer.send(topic, b"lost", key="k")
                    raise RuntimeError("the caller changed its mind")
            async with producer.transaction():
                await producer.send(topic, b"one", key="k")
                await producer.send(topic, b"end", key="k")
            assert not producer.fenced
        records = await read_until(bootstrap, topic, b"end")
    assert [r.value for r in records] == [b"one", b"end"]
