"""Helpers for the Kafka guard tests: unique names, a read_committed reader, and a
check that aiokafka logged nothing through the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio

from lockkit import FencingToken

aiokafka: Any = importlib.import_module("aiokafka")


def unique(prefix: str) -> str:
    return f"guard-{prefix}-{uuid.uuid4().hex[:10]}"


def token(value: int, lock: str, owner: str = "holder-a", backend: str = "test") -> FencingToken:
    return FencingToken(value, name=lock, backend=backend, owner=owner)


@contextlib.asynccontextmanager
async def consumer(bootstrap: str, topic: str, **options: Any) -> AsyncIterator[Any]:
    reader = aiokafka.AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **options,
    )
    await reader.start()
    try:
        yield reader
    finally:
        await reader.stop()


async def read_until(bootstrap: str, topic: str, last: bytes, **options: Any) -> list[Any]:
    """Every record of ``topic`` up to the first whose value is ``last`` (included),
    read with ``read_committed`` unless told otherwise."""
    options.setdefault("isolation_level", "read_committed")
    records: list[Any] = []
    async with consumer(bootstrap, topic, **options) as reader:
        with anyio.fail_after(30):
            async for record in reader:
                records.append(record)
                if record.value == last:
                    return records
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def no_loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Collect what is reported to the event loop's exception handler (where
    "Future exception was never retrieved" goes) while the block runs and when its
    garbage is collected; fail if anything was."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0.05)
    finally:
        loop.set_exception_handler(previous)
    assert not seen, [context.get("message") for context in seen]


@contextlib.contextmanager
def as_another_process() -> Iterator[None]:
    """Start producers in the block as another process would: with its own memory of the
    tokens used per lock (so only the broker can fence the older producer)."""
    from lockkit.guards import kafka

    saved = kafka._used
    kafka._used = {}
    try:
        yield
    finally:
        kafka._used = saved


async def create_topic(bootstrap: str, topic: str) -> None:
    """Create ``topic`` and wait until the broker serves its partition, so that a
    producer's first send finds it (aiokafka logs an error while an auto-created topic
    is still unknown, which the stderr checks would see)."""
    admin_module = importlib.import_module("aiokafka.admin")
    admin = admin_module.AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([admin_module.NewTopic(topic, 1, 1)])
        with anyio.fail_after(30):
            while True:
                [described] = await admin.describe_topics([topic])
                partitions = described.get("partitions") or []
                if described["error_code"] == 0 and partitions and partitions[0]["leader"] >= 0:
                    return
                await anyio.sleep(0.05)
    finally:
        await admin.close()
