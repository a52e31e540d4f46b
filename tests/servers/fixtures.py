"""pytest plugin: real servers as fixtures (``pytest_plugins = ["tests.servers.fixtures"]``).

Session-scoped fixtures start each server or cluster the first time a test asks for it
and stop it when the session ends, failures included:

=====================  ==================================================================
``redis_server``       standalone Redis (or ``$LOCKKIT_TEST_REDIS_URL``)
``redis_masters``      5 independent Redis masters, for Redlock
``redis_sentinel``     primary + replica + 3 Sentinels, service name ``lockkit``
``redis_cluster``      Redis Cluster, 3 masters with a replica each, every slot served
``zookeeper_server``   standalone ZooKeeper (or ``$LOCKKIT_TEST_ZOOKEEPER_URL``)
``zookeeper_ensemble`` 3 ZooKeeper servers in one quorum
``etcd_server``        single-member etcd (or ``$LOCKKIT_TEST_ETCD_URL``)
``etcd_cluster``       3 etcd members
``kafka_broker``       KRaft Kafka broker ready for transactions
                       (or ``$LOCKKIT_TEST_KAFKA_BOOTSTRAP``)
``postgres_server``    PostgreSQL with a database ``lockkit``
                       (or ``$LOCKKIT_TEST_POSTGRES_URL``)
``servers``            function-scoped :class:`ServerPool` for private, disposable servers
=====================  ==================================================================

A test may kill, pause or stop members of a shared server; after the test the harness
brings them back (resume, restart, wait until healthy), so the next test finds them
serving. Shared *state* is not reset: tests use their own key names. When a test
fails, the last lines of the logs of the servers it used are added to its report.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import TypeVar

import pytest

from ._base import ProcessServer, ServerGroup, ServerHandle
from ._pool import ServerPool, external_server
from .etcd import EtcdCluster, EtcdServer
from .kafka import KafkaBroker
from .postgres import PostgresServer
from .redis import RedisCluster, RedisMasters, RedisSentinelGroup, RedisServer
from .zookeeper import ZooKeeperEnsemble, ZooKeeperServer

__all__ = (
    "etcd_cluster",
    "etcd_server",
    "kafka_broker",
    "postgres_server",
    "redis_cluster",
    "redis_masters",
    "redis_sentinel",
    "redis_server",
    "server_pool",
    "servers",
    "zookeeper_ensemble",
    "zookeeper_server",
)

T = TypeVar("T")


@pytest.fixture(scope="session")
def server_pool() -> Iterator[ServerPool]:
    """The pool that owns the session's shared servers."""
    pool = ServerPool("session")
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def servers() -> Iterator[ServerPool]:
    """A pool for this test alone: ``servers.redis()``, ``servers.kafka()``,
    ``servers.zookeeper_ensemble()``... all stopped when the test ends."""
    pool = ServerPool("test")
    try:
        yield pool
    finally:
        pool.close()


def _single(kind: str, start: Callable[[], T]) -> ServerHandle | T:
    return external_server(kind) or start()


@pytest.fixture(scope="session")
def redis_server(server_pool: ServerPool) -> ServerHandle | RedisServer:
    """A standalone Redis: ``.url`` is ``redis://127.0.0.1:PORT/0``."""
    return _single("redis", server_pool.redis)


@pytest.fixture(scope="session")
def redis_masters(server_pool: ServerPool) -> RedisMasters:
    """Five independent Redis masters: ``.nodes``, ``.urls``, ``.url`` (``redlock://``)."""
    return server_pool.redis_masters(5)


@pytest.fixture(scope="session")
def redis_sentinel(server_pool: ServerPool) -> RedisSentinelGroup:
    """Primary, replica and three Sentinels: ``.primary()``, ``.sentinel_addresses``,
    ``.service_name``, ``.url`` (``redis+sentinel://s1,s2,s3/lockkit``)."""
    return server_pool.redis_sentinel(replicas=1, sentinels=3)


@pytest.fixture(scope="session")
def redis_cluster(server_pool: ServerPool) -> RedisCluster:
    """Redis Cluster, 3 masters + 3 replicas: ``.startup_nodes``, ``.masters()``,
    ``.master_for(key)``, ``.url`` (``redis+cluster://...``)."""
    return server_pool.redis_cluster(masters=3, replicas_per_master=1)


@pytest.fixture(scope="session")
def zookeeper_server(server_pool: ServerPool) -> ServerHandle | ZooKeeperServer:
    """A standalone ZooKeeper: ``.hosts``, ``.url`` (``zookeeper://127.0.0.1:PORT``)."""
    return _single("zookeeper", server_pool.zookeeper)


@pytest.fixture(scope="session")
def zookeeper_ensemble(server_pool: ServerPool) -> ZooKeeperEnsemble:
    """Three ZooKeeper servers: ``.nodes``, ``.leader()``, ``.hosts``, ``.url``."""
    return server_pool.zookeeper_ensemble(3)


@pytest.fixture(scope="session")
def etcd_server(server_pool: ServerPool) -> ServerHandle | EtcdServer:
    """A single etcd member: ``.endpoint``, ``.url`` (``etcd://127.0.0.1:PORT``)."""
    return _single("etcd", server_pool.etcd)


@pytest.fixture(scope="session")
def etcd_cluster(server_pool: ServerPool) -> EtcdCluster:
    """Three etcd members: ``.nodes``, ``.leader()``, ``.endpoints``, ``.url``."""
    return server_pool.etcd_cluster(3)


@pytest.fixture(scope="session")
def kafka_broker(server_pool: ServerPool) -> ServerHandle | KafkaBroker:
    """A KRaft Kafka broker with transactions: ``.bootstrap_servers``, ``.url``."""
    return _single("kafka", server_pool.kafka)


@pytest.fixture(scope="session")
def postgres_server(server_pool: ServerPool) -> ServerHandle | PostgresServer:
    """PostgreSQL: ``.url`` (``postgresql://postgres@127.0.0.1:PORT/lockkit``)."""
    return _single("postgres", server_pool.postgres)


@pytest.fixture(autouse=True)
def _heal_shared_servers() -> Iterator[None]:
    """After each test, bring back whatever it killed, paused or stopped."""
    yield
    for pool in list(ServerPool.active):
        if pool.label == "session":
            pool.heal()


def _handles(item: pytest.Item) -> list[ServerHandle | ServerGroup[ProcessServer]]:
    values = getattr(item, "funcargs", {}).values()
    found: list[ServerHandle | ServerGroup[ProcessServer]] = []
    for value in values:
        if isinstance(value, ServerHandle | ServerGroup):
            found.append(value)
        elif isinstance(value, ServerPool) and value.label != "session":
            found.extend(value.owned)
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the log tails of the servers a failed test used to its report."""
    report = yield
    if report.failed:
        for handle in _handles(item):
            report.sections.append((f"server log: {handle.name}", handle.log_tail()))
    return report
