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


async def test_reads_in_these_tests_are_linearizable(monkeypatch):
    """etcetra's ``get`` asks for a serializable read, which a lagging member answers with
    a stale value; :func:`linearizable_get` asks for one that goes through Raft."""
    rpc_pb2_grpc = importlib.import_module("etcetra.grpc_api.rpc_pb2_grpc")
    rpc_pb2 = importlib.import_module("etcetra.grpc_api.rpc_pb2")
    requests = []

    class KV:
        def __init__(self, channel):
            pass

        async def Range(self, request, **options):
            requests.append(request)
            return rpc_pb2.RangeResponse(kvs=[{"key": request.key, "value": b"v"}])

    monkeypatch.setattr(rpc_pb2_grpc, "KVStub", KV)
    etcd = EtcdCommunicator(channel=None)
    assert await etcd.get("k") == "v"
    assert await linearizable_get(etcd, "k") == "v"
    etcetra_get, ours = requests
    assert etcetra_get.serializable is True
    assert ours.serializable is False
    assert ours.key == b"k"


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
