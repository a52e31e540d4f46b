"""Smoke tests: the ZooKeeper fixtures serve, replicate and survive losing the leader."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from aiozk import ZKClient
from aiozk.protocol import SyncRequest


@asynccontextmanager
async def zk_client(hosts: str) -> AsyncIterator[ZKClient]:
    client = ZKClient(hosts, session_timeout=10)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


def unique_path() -> str:
    return f"/smoke-{uuid.uuid4().hex[:12]}"


@pytest.mark.zookeeper
async def test_single_server_round_trip(zookeeper_server):
    assert zookeeper_server.url == f"zookeeper://127.0.0.1:{zookeeper_server.port}"
    path = unique_path()
    async with zk_client(zookeeper_server.hosts) as client:
        await client.create(path, data=b"v1")
        assert await client.get_data(path) == b"v1"
        await client.set_data(path, b"v2")
        assert await client.get_data(path) == b"v2"
        await client.delete(path)
        assert not await client.exists(path)


@pytest.mark.zookeeper
@pytest.mark.cluster
async def test_ensemble_write_is_seen_by_every_member(zookeeper_ensemble):
    assert len(zookeeper_ensemble.nodes) == 3
    modes = sorted(node.mode() for node in zookeeper_ensemble.nodes)
    assert modes == ["follower", "follower", "leader"]
    assert "zk_server_state\tleader" in zookeeper_ensemble.leader().command_4lw("mntr")
    path = unique_path()
    async with zk_client(zookeeper_ensemble.leader().hosts) as writer:
        await writer.create(path, data=b"everywhere")
    for node in zookeeper_ensemble.nodes:
        async with zk_client(node.hosts) as reader:
            # A follower applies a commit a moment later: sync makes it catch up first.
            await reader.send(SyncRequest(path=path))
            assert await reader.get_data(path) == b"everywhere"


@pytest.mark.zookeeper
@pytest.mark.cluster
@pytest.mark.fault
async def test_ensemble_serves_after_the_leader_dies(zookeeper_ensemble):
    path = unique_path()
    async with zk_client(zookeeper_ensemble.hosts) as client:
        await client.create(path, data=b"before")
    old = zookeeper_ensemble.leader()
    old.kill()
    new = await anyio.to_thread.run_sync(zookeeper_ensemble.wait_for_leader, old)
    assert new is not old
    survivors = ",".join(node.hostport for node in zookeeper_ensemble.nodes if node is not old)
    async with zk_client(survivors) as client:
        assert await client.get_data(path) == b"before"
        await client.set_data(path, b"after")
        assert await client.get_data(path) == b"after"
