"""The harness itself: fault operations, restarts, external servers, failures."""

from __future__ import annotations

import base64
import importlib
import json
import socket
import uuid

import anyio
import pytest
from aiozk import ZKClient
from etcetra import EtcdClient, HostPortPair

from tests.servers import (
    EtcdCluster,
    EtcdServer,
    ExternalRedis,
    ExternalServerError,
    MissingServerError,
    RedisServer,
    ServerError,
    ServerStartError,
    external_server,
    free_ports,
)
from tests.servers import etcd as etcd_harness
from tests.servers._wire import RespClient, resp_call
from tests.servers.etcd import linearizable_get
from tests.servers.kafka import new_cluster_id

aiokafka = importlib.import_module("aiokafka")  # untyped: see test_kafka.py


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert not set(ports) & set(free_ports(20))
    for port in ports[:3]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


@pytest.mark.redis
@pytest.mark.fault
def test_pause_resume_and_restart_keep_the_port(servers):
    redis = servers.redis(appendonly=True)
    port, log = redis.port, redis.log_path
    resp_call(port, "SET", "kept", "yes")
    redis.pause()
    assert redis.is_paused and redis.needs_heal
    with pytest.raises(OSError), RespClient(port, timeout=0.3) as client:
        client.call("PING")  # connects (the kernel accepts), but no answer comes
    redis.resume()
    assert resp_call(port, "PING") == "PONG"
    redis.restart()
    assert redis.port == port
    assert resp_call(port, "GET", "kept") == b"yes"  # same data directory, AOF replayed
    redis.kill()
    assert not redis.is_running and redis.needs_heal
    redis.heal()
    assert resp_call(port, "PING") == "PONG"
    assert log.read_text().count("=== start #") == 3


@pytest.mark.redis
def test_without_persistence_a_restart_loses_the_data(servers):
    redis = servers.redis()
    resp_call(redis.port, "SET", "lost", "yes")
    redis.restart()
    assert resp_call(redis.port, "GET", "lost") is None


@pytest.mark.zookeeper
@pytest.mark.fault
async def test_zookeeper_restart_keeps_nodes(servers):
    zk = await anyio.to_thread.run_sync(servers.zookeeper)
    path = f"/kept-{uuid.uuid4().hex[:8]}"
    client = ZKClient(zk.hosts)
    await client.start()
    try:
        await client.create(path, data=b"v")
    finally:
        await client.close()
    await zk.arestart()
    client = ZKClient(zk.hosts)
    await client.start()
    try:
        assert await client.get_data(path) == b"v"
    finally:
        await client.close()


@pytest.mark.etcd
@pytest.mark.fault
async def test_etcd_restart_keeps_keys(servers):
    etcd = await anyio.to_thread.run_sync(servers.etcd)
    async with EtcdClient(HostPortPair(etcd.host, etcd.port)).connect() as client:
        await client.put("kept", "v")
    await etcd.arestart()
    async with EtcdClient(HostPortPair(etcd.host, etcd.port)).connect() as client:
        assert await linearizable_get(client, "kept") == "v"


def test_an_etcd_member_in_an_election_has_no_leader(tmp_path, monkeypatch):
    # etcdctl's JSON leaves out zero fields: a member between leaders has no "leader"
    status = {"header": {"member_id": 7, "raft_term": 3}, "raftIndex": 12, "raftTerm": 3}
    output = json.dumps([{"Endpoint": "http://127.0.0.1:1", "Status": status}])
    monkeypatch.setattr(etcd_harness, "etcdctl", lambda *args, **kwargs: output)
    monkeypatch.setattr(EtcdServer, "is_running", property(lambda self: True))
    cluster = EtcdCluster("etcd", tmp_path)
    cluster.nodes = [
        EtcdServer(f"etcd-{i}", tmp_path / str(i), ports={"client": 1, "peer": 2}) for i in range(3)
    ]
    assert cluster.nodes[0].status()["leader"] == 0
    with pytest.raises(ServerError, match="no leader"):
        cluster.leader()  # a ServerError: wait_for_leader() keeps polling


def test_kafka_cluster_ids_never_start_with_a_dash():
    ids = [new_cluster_id() for _ in range(5000)]  # (31/32)**5000 < 1e-60
    assert len(set(ids)) == len(ids)
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-"), cluster_id
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_kafka_cluster_id_draws_again_after_a_leading_dash(monkeypatch):
    dash = uuid.UUID(bytes=b"\xf8" + bytes(15))  # first six bits 111110: "-"
    plain = uuid.UUID(bytes=bytes(16))
    draws = iter([dash, plain])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))
    assert base64.urlsafe_b64encode(dash.bytes).startswith(b"-")
    assert new_cluster_id() == "A" * 22


@pytest.mark.kafka
@pytest.mark.fault
async def test_kafka_restart_keeps_records(servers):
    kafka = await anyio.to_thread.run_sync(servers.kafka)
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait("kept", b"v")
    finally:
        await producer.stop()
    await kafka.arestart()
    consumer = aiokafka.AIOKafkaConsumer(
        "kept", bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        with anyio.fail_after(30):
            assert (await consumer.getone()).value == b"v"
    finally:
        await consumer.stop()


@pytest.mark.redis
def test_external_servers_refuse_fault_operations(servers, monkeypatch):
    redis = servers.redis()
    monkeypatch.setenv("LOCKKIT_TEST_REDIS_URL", f"redis://127.0.0.1:{redis.port}/0")
    external = external_server("redis")
    assert isinstance(external, ExternalRedis)
    assert external.url == redis.url and external.port == redis.port
    external.ping()
    for operation in (external.kill, external.stop, external.pause, external.restart):
        with pytest.raises(ExternalServerError, match="LOCKKIT_TEST_REDIS_URL"):
            operation()
    monkeypatch.delenv("LOCKKIT_TEST_REDIS_URL")
    assert external_server("redis") is None


def test_an_unreachable_external_server_fails_loudly(monkeypatch):
    (port,) = free_ports(1)
    monkeypatch.setenv("LOCKKIT_TEST_ETCD_URL", f"etcd://127.0.0.1:{port}")
    with pytest.raises(Exception, match="does not answer"):
        external_server("etcd")


def test_a_missing_binary_names_make_deps(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingServerError, match="make deps"):
        RedisServer("redis", tmp_path / "redis")


@pytest.mark.redis
def test_a_failed_start_carries_the_log(servers):
    with pytest.raises(ServerStartError) as failure:
        servers.redis(config=("no-such-directive yes",))
    assert "exited with code" in str(failure.value)
    assert "no-such-directive" in str(failure.value)  # the server's own complaint
