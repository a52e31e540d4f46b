"""Holders in other processes: a zombie fenced by the broker, in a fresh interpreter
that must print nothing on stderr; and the paused-holder story end to end with the Redis
lock backend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import anyio
import pytest

import lockkit
from lockkit.guards import TEXT
from lockkit.guards.kafka import HEADER_TOKEN, KafkaGuard

from .helpers import create_topic, no_loop_errors, read_until, token, unique

pytestmark = pytest.mark.kafka

ZOMBIE = """
import gc, sys, anyio
from lockkit import FencingToken, StaleTokenError
from lockkit.guards import TEXT
from lockkit.guards.kafka import KafkaGuard

async def main(bootstrap, lock, topic):
    guard = KafkaGuard(bootstrap, codec=TEXT)
    held = FencingToken(1, name=lock, backend="test", owner="zombie")
    async with guard.producer(held) as producer:
        await producer.send(topic, "zombie-1", key="k")
        print("READY", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        try:
            await producer.send(topic, "zombie-2", key="k")
        except StaleTokenError as exc:
            print("FENCED", type(exc).__name__, type(exc.__cause__).__name__, flush=True)
        try:
            await producer.send(topic, "zombie-3", key="k")
        except StaleTokenError as exc:
            print("STILL", type(exc).__name__, flush=True)
    gc.collect()

anyio.run(main, *sys.argv[1:])
gc.collect()
"""


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-W", "default", "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_a_fenced_zombie_prints_nothing_on_stderr(kafka_broker) -> None:
    """Fenced on its next send after the new holder started: aiokafka fails futures no
    one awaits (the transaction's end, the unsent batch); the guard retrieves them, so
    a fresh interpreter exits without "Future exception was never retrieved"."""
    bootstrap = kafka_broker.bootstrap_servers
    lock, topic = unique("lock"), unique("topic")
    await create_topic(bootstrap, topic)
    child = spawn(ZOMBIE, bootstrap, lock, topic)
    try:
        assert child.stdin is not None and child.stdout is not None
        with anyio.fail_after(60):
            ready = await anyio.to_thread.run_sync(child.stdout.readline)
        assert ready.strip() == "READY", ready + (child.stderr.read() if child.stderr else "")
        async with no_loop_errors(), KafkaGuard(bootstrap, codec=TEXT) as guard:
            async with guard.producer(token(2, lock, owner="new")) as new:
                await new.send(topic, "new-1", key="k")
                out, err = await anyio.to_thread.run_sync(child.communicate, "go\n", 60)
                await new.send(topic, "end", key="k")
            records = await read_until(bootstrap, topic, b"end")
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert child.returncode == 0, out + err
    assert out.split("\n")[:2] == [
        "FENCED ProducerFencedError ProducerFenced",
        "STILL ProducerFencedError",
    ]
    assert err == "", err
    assert [r.value for r in records] == [b"zombie-1", b"new-1", b"end"]


HOLDER = """
import sys, anyio, lockkit
from lockkit import StaleTokenError
from lockkit.guards import TEXT
from lockkit.guards.kafka import KafkaGuard

async def main(url, bootstrap, name, topic):
    guard = KafkaGuard(bootstrap, codec=TEXT)
    async with lockkit.connect(url) as locks:
        try:
            async with locks.lock(name, ttl=1.0) as token:
                async with guard.producer(token) as producer:
                    await producer.send(topic, "a-1", key="stock")
                    # a batch in flight when the process freezes: nothing in it can see
                    # the lease run out, as in a long GC pause
                    with anyio.CancelScope(shield=True):
                        try:
                            async with producer.transaction():
                                await producer.send(topic, "a-2", key="stock")
                                print("TOKEN", int(token), token.owner, flush=True)
                                await anyio.sleep(1.5)  # frozen in here
                                await producer.send(topic, "a-3", key="stock")
                            print("COMMITTED", flush=True)
                        except StaleTokenError as exc:
                            print("FENCED", type(exc.__cause__).__name__, flush=True)
        except lockkit.LockLostError:
            print("LOST", flush=True)

anyio.run(main, *sys.argv[1:])
"""


@pytest.mark.redis
@pytest.mark.fault
async def test_paused_holder_is_fenced_by_the_broker(kafka_broker, redis_server) -> None:
    """Holder A (Redis lock, ttl 1 s) is frozen with a transaction open; B acquires the
    lock and starts its producer, which aborts A's transaction; A resumes, its next
    produce is fenced, and a read_committed reader sees A's first record and B's, never
    A's batch."""
    bootstrap = kafka_broker.bootstrap_servers
    name, topic = "paused:" + uuid.uuid4().hex[:6], unique("stock")
    await create_topic(bootstrap, topic)
    child = spawn(HOLDER, redis_server.url, bootstrap, name, topic)
    try:
        assert child.stdout is not None
        with anyio.fail_after(60):
            line = await anyio.to_thread.run_sync(child.stdout.readline)
        kind, value, _owner = line.split()
        assert kind == "TOKEN"
        os.kill(child.pid, signal.SIGSTOP)
        started = time.monotonic()
        async with no_loop_errors(), KafkaGuard(bootstrap, codec=TEXT) as guard:
            async with lockkit.connect(redis_server.url) as locks:
                async with locks.lock(name, ttl=10, timeout=10) as new:
                    assert int(new) > int(value)
                    assert time.monotonic() - started < 3
                    async with guard.producer(new) as producer:
                        await producer.send(topic, "b-1", key="stock")
                        os.kill(child.pid, signal.SIGCONT)
                        out, err = await anyio.to_thread.run_sync(child.communicate, None, 30)
                        await producer.send(topic, "end", key="stock")
            records = await read_until(bootstrap, topic, b"end")
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
        child.wait()
    assert "FENCED ProducerFenced" in out, out + err
    assert "COMMITTED" not in out
    assert err == "", err
    assert [r.value for r in records] == [b"a-1", b"b-1", b"end"]
    tokens = [int(dict(r.headers)[HEADER_TOKEN]) for r in records]
    assert tokens == [int(value), int(new), int(new)]
