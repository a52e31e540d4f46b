"""Smoke tests: the etcd fixtures serve, replicate and survive losing the leader."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from etcetra import EtcdClient, HostPortPair
from etcetra.client import EtcdCommunicator

from .etcd import linearizable_get

grpc = importlib.import_module("grpc")  # no type stubs


@asynccontextmanager
async def etcd_at(host: str, port: int) -> AsyncIterator[EtcdCommunicator]:
    async with EtcdClient(HostPortPair(host, port)).connect() as communicator:
        yield communicator


def unique_key() -> str:
    return f"smoke/{uuid.uuid4().hex[:12]}"


@pytest.mark.etcd
async def test_single_server_round_trip(etcd_server):
    assert etcd_server.url == f"etcd://127.0.0.1:{etcd_server.port}"
    key = unique_key()
    async with etcd_at(etcd_server.host, etcd_server.port) as etcd:
        await etcd.put(key, "v1")
        assert await etcd.get(key) == "v1"
        lease = await etcd.grant_lease(10)
        await etcd.put(f"{key}/leased", "x", lease=lease)
        await etcd.revoke_lease(lease)
        assert await etcd.get(f"{key}/leased") is None


@pytest.mark.etcd
@pytest.mark.cluster
async def test_cluster_write_is_seen_by_every_member(etcd_cluster):
    assert len(etcd_cluster.nodes) == 3
    leader = etcd_cluster.leader()
    key = unique_key()
    async with etcd_at(leader.host, leader.port) as etcd:
        await etcd.put(key, "everywhere")
    for node in etcd_cluster.nodes:
        async with etcd_at(node.host, node.port) as etcd:
            assert await linearizable_get(etcd, key) == "everywhere"


@pytest.mark.etcd
@pytest.mark.cluster
@pytest.mark.fault
async def test_linearizable_get_needs_a_quorum(etcd_cluster):
    """A member cut off from the quorum still has the key, yet the reads the tests make
    refuse to answer: they are linearizable, not served from a possibly stale member."""
    key = unique_key()
    survivor, *others = etcd_cluster.nodes
    async with etcd_at(*survivor.address) as etcd:
        await etcd.put(key, "v")
        assert await linearizable_get(etcd, key) == "v"
        for node in others:
            node.pause()
        assert await etcd.get(key) == "v"  # etcetra's get: serializable, answers alone
        with pytest.raises(grpc.aio.AioRpcError):
            await linearizable_get(etcd, key, timeout=3)


@pytest.mark.etcd
@pytest.mark.cluster
@pytest.mark.fault
async def test_cluster_serves_after_the_leader_dies(etcd_cluster):
    key = unique_key()
    async with etcd_at(*etcd_cluster.nodes[0].address) as etcd:
        await etcd.put(key, "before")
    old = etcd_cluster.leader()
    old.kill()
    new = await anyio.to_thread.run_sync(etcd_cluster.wait_for_leader, old)
    assert new is not old
    async with etcd_at(new.host, new.port) as etcd:
        assert await linearizable_get(etcd, key) == "before"
        await etcd.put(key, "after")
    for node in etcd_cluster.nodes:
        if node is not old:
            async with etcd_at(node.host, node.port) as etcd:
                assert await linearizable_get(etcd, key) == "after"
