"""FaultProxy against a real Redis: latency, holds, drops, resets, cuts and restores."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import pytest
import redis.asyncio as aioredis
import redis.exceptions

import lockkit
from lockkit._core._lease import LeaseState
from lockkit.testing import FaultProxy
from tests.servers import ServerHandle

pytestmark = [pytest.mark.redis, pytest.mark.fault]


def _client(proxy: FaultProxy, timeout: float = 2.0) -> aioredis.Redis:
    return aioredis.Redis(
        host=proxy.host,
        port=proxy.port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )


async def _rtt(client: aioredis.Redis) -> float:
    started = time.monotonic()
    assert await client.ping()
    return time.monotonic() - started


async def test_latency_is_added_per_direction(redis_server: ServerHandle) -> None:
    async with FaultProxy(redis_server.address) as proxy:
        client = _client(proxy)
        try:
            base = await _rtt(client)
            proxy.set_latency(up=0.15)
            assert await _rtt(client) >= 0.15
            proxy.set_latency(up=0.0, down=0.1)
            assert 0.1 <= await _rtt(client) < 0.15 + base + 0.5
            proxy.set_latency(up=0.1, down=0.1)
            assert await _rtt(client) >= 0.2
            await proxy.restore()
            assert await _rtt(client) < 0.1
        finally:
            await client.aclose()


async def test_held_reply_arrives_on_release_after_the_server_applied_it(
    redis_server: ServerHandle,
) -> None:
    key = f"proxy:{uuid.uuid4().hex}"
    async with FaultProxy(redis_server.address) as proxy:
        client = _client(proxy, timeout=5)
        direct = aioredis.Redis(host=redis_server.host, port=redis_server.port)
        try:
            await client.ping()
            proxy.hold("down")

            async def set_key() -> object:
                return await client.set(key, "1")

            pending = asyncio.create_task(set_key())
            for _ in range(100):  # the server applied it while the reply is held
                if await direct.get(key) == b"1":
                    break
                await asyncio.sleep(0.01)
            assert await direct.get(key) == b"1"
            assert not pending.done()
            proxy.release()
            assert await asyncio.wait_for(pending, 2) is True
        finally:
            await direct.delete(key)
            await client.aclose()
            await direct.aclose()


async def test_dropped_direction_times_out_and_reset_breaks_connections(
    redis_server: ServerHandle,
) -> None:
    async with FaultProxy(redis_server.address) as proxy:
        client = _client(proxy, timeout=0.3)
        try:
            await client.ping()
            proxy.drop("down")
            with pytest.raises(redis.exceptions.TimeoutError):
                await client.ping()
            await proxy.restore()
            assert await client.ping()  # redis-py reconnects after the timeout
            assert await client.ping()  # redis-py reconnects after a reset, too
        finally:
            await client.aclose()


async def test_reset_sends_an_rst_to_the_client(redis_server: ServerHandle) -> None:
    async with FaultProxy(redis_server.address) as proxy:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        try:
            writer.write(b"PING\r\n")
            assert await reader.readline() == b"+PONG\r\n"
            assert proxy.connections == 1
            proxy.reset()
            with pytest.raises(ConnectionResetError):
                writer.write(b"PING\r\n")
                await writer.drain()
                await reader.readline()
            await asyncio.sleep(0.05)
            assert proxy.connections == 0
        finally:
            writer.close()


async def test_cut_refuses_or_hangs_new_connections(redis_server: ServerHandle) -> None:
    async with FaultProxy(redis_server.address) as proxy:
        port = proxy.port
        proxy.cut()  # new="refuse"
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(proxy.host, port)
        await proxy.restore()
        assert proxy.port == port
        proxy.cut(new="hang")
        client = _client(proxy, timeout=0.3)
        try:
            with pytest.raises(redis.exceptions.TimeoutError):
                await client.ping()
            await proxy.restore()
            assert await client.ping()
        finally:
            await client.aclose()


async def test_cut_makes_the_lease_at_risk_then_lost_and_restore_heals(
    redis_server: ServerHandle,
) -> None:
    name = f"proxy:{uuid.uuid4().hex}"
    async with FaultProxy(redis_server.address) as proxy:
        url = f"redis://{proxy.hostport}/0"
        async with lockkit.connect(url, timeout=0.3, connect_timeout=0.3) as locks:
            lock = locks.lock(name, ttl=1.5, on_lost="raise")
            token = await lock.acquire()
            lease = lock.lease
            assert lease is not None and lease.state is LeaseState.HELD
            proxy.cut()
            with pytest.raises(lockkit.BackendUnavailable):
                await lock.extend()
            states = set()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not lease.lost:
                states.add(lease.state)
                await asyncio.sleep(0.02)
            assert LeaseState.AT_RISK in states
            assert lease.lost
            await proxy.restore()
            with contextlib.suppress(lockkit.LockNotOwnedError):
                await lock.release()  # whether it says so depends on when it learnt
            async with locks.lock(name, ttl=2, timeout=5) as again:
                assert again > token
