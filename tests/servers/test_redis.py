"""Smoke tests: the Redis fixtures serve, replicate and survive the loss of a primary."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel


def unique(prefix: str) -> str:
    return f"smoke:{prefix}:{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def redis_at(port: int) -> AsyncIterator[Redis]:
    client = Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def cluster_client(cluster) -> AsyncIterator[RedisCluster]:
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster.startup_nodes],
        socket_timeout=5,
    )
    try:
        yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def sentinel_primary(group) -> AsyncIterator[Redis]:
    sentinel = Sentinel(group.sentinel_addresses, socket_timeout=2)
    primary = sentinel.master_for(group.service_name, socket_timeout=5)
    try:
        yield primary
    finally:
        await primary.aclose()
        for client in sentinel.sentinels:
            await client.aclose()


@pytest.mark.redis
async def test_single_server_round_trip(redis_server):
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = Redis.from_url(redis_server.url)
    try:
        key = unique("single")
        assert await client.set(key, b"v1", px=10_000)
        assert await client.get(key) == b"v1"
        assert await client.incr(unique("counter")) == 1
    finally:
        await client.aclose()


@pytest.mark.redlock
async def test_independent_masters(redis_masters):
    assert len(redis_masters.nodes) == 5
    assert len({node.port for node in redis_masters.nodes}) == 5
    assert redis_masters.url == "redlock://" + ",".join(
        f"127.0.0.1:{node.port}" for node in redis_masters.nodes
    )
    key = unique("redlock")
    for index, node in enumerate(redis_masters.nodes):
        async with redis_at(node.port) as client:
            assert await client.set(key, index)
    for index, node in enumerate(redis_masters.nodes):
        async with redis_at(node.port) as client:
            assert await client.get(key) == str(index).encode()  # nothing is shared
            assert (await client.info("replication"))["role"] == "master"


@pytest.mark.redis
@pytest.mark.cluster
async def test_sentinel_write_reaches_replica(redis_sentinel):
    assert redis_sentinel.url.startswith("redis+sentinel://127.0.0.1:")
    assert redis_sentinel.url.endswith(f"/{redis_sentinel.service_name}")
    assert len(redis_sentinel.sentinel_addresses) == 3
    key = unique("sentinel")
    async with sentinel_primary(redis_sentinel) as primary:
        await primary.set(key, b"replicated")
        assert (await primary.info("server"))["tcp_port"] == redis_sentinel.primary().port
    await anyio.to_thread.run_sync(redis_sentinel.wait_replicated)
    (replica,) = redis_sentinel.replicas()
    async with redis_at(replica.port) as client:
        assert await client.get(key) == b"replicated"
        assert (await client.info("replication"))["role"] == "slave"


@pytest.mark.redis
@pytest.mark.cluster
@pytest.mark.fault
async def test_sentinel_failover_after_primary_dies(redis_sentinel):
    key = unique("failover")
    async with sentinel_primary(redis_sentinel) as primary:
        await primary.set(key, b"before")
    await anyio.to_thread.run_sync(redis_sentinel.wait_replicated)
    old = redis_sentinel.primary()
    old.kill()
    new = await anyio.to_thread.run_sync(redis_sentinel.wait_for_failover, old)
    assert new is not old
    async with sentinel_primary(redis_sentinel) as primary:
        assert (await primary.info("server"))["tcp_port"] == new.port
        assert await primary.get(key) == b"before"
        await primary.set(key, b"after")
        assert await primary.get(key) == b"after"


@pytest.mark.redis
@pytest.mark.cluster
async def test_cluster_serves_every_slot(redis_cluster):
    masters = redis_cluster.masters()
    assert len(masters) == 3
    assert len(redis_cluster.replicas()) == 3
    keys: dict[int, str] = {}
    for index in range(200):
        key = unique(f"slot{index}")
        keys.setdefault(redis_cluster.master_for(key).port, key)
        if len(keys) == 3:
            break
    assert sorted(keys) == sorted(node.port for node in masters)
    async with cluster_client(redis_cluster) as client:
        for port, key in keys.items():
            await client.set(key, str(port))
        for port, key in keys.items():
            assert await client.get(key) == str(port).encode()
    for port, key in keys.items():  # each key really lives on its own master
        async with redis_at(port) as node:
            assert await node.get(key) == str(port).encode()


@pytest.mark.redis
@pytest.mark.cluster
@pytest.mark.fault
async def test_cluster_replica_takes_over_a_killed_master(redis_cluster):
    key = unique("takeover")
    async with cluster_client(redis_cluster) as client:
        await client.set(key, b"kept")
    await anyio.to_thread.run_sync(redis_cluster.wait_replicated, key)
    old = redis_cluster.master_for(key)
    old.kill()
    await anyio.to_thread.run_sync(redis_cluster.wait_for_failover, old)
    assert redis_cluster.master_for(key) is not old
    async with cluster_client(redis_cluster) as client:
        assert await client.get(key) == b"kept"
        await client.set(key, b"updated")
        assert await client.get(key) == b"updated"
