"""Real servers for the tests: handles that start, stop, kill, pause and restart them.

The pytest fixtures live in :mod:`tests.servers.fixtures`; this package exposes the
handle classes for annotations and for tests that build their own topologies through
the function-scoped ``servers`` fixture (a :class:`ServerPool`).
"""

from __future__ import annotations

from ._base import (
    LOOPBACK,
    ExternalServer,
    ExternalServerError,
    MissingServerError,
    ProcessServer,
    ServerError,
    ServerGroup,
    ServerHandle,
    ServerStartError,
    free_ports,
    wait_until,
)
from ._pool import (
    ExternalEtcd,
    ExternalKafka,
    ExternalRedis,
    ExternalZooKeeper,
    ServerPool,
    external_server,
)
from .etcd import EtcdCluster, EtcdServer, etcdctl
from .kafka import KafkaBroker
from .redis import (
    RedisCluster,
    RedisClusterNode,
    RedisMasters,
    RedisSentinel,
    RedisSentinelGroup,
    RedisServer,
)
from .zookeeper import ZooKeeperEnsemble, ZooKeeperServer

__all__ = (
    "LOOPBACK",
    "EtcdCluster",
    "EtcdServer",
    "ExternalEtcd",
    "ExternalKafka",
    "ExternalRedis",
    "ExternalServer",
    "ExternalServerError",
    "ExternalZooKeeper",
    "KafkaBroker",
    "MissingServerError",
    "ProcessServer",
    "RedisCluster",
    "RedisClusterNode",
    "RedisMasters",
    "RedisSentinel",
    "RedisSentinelGroup",
    "RedisServer",
    "ServerError",
    "ServerGroup",
    "ServerHandle",
    "ServerPool",
    "ServerStartError",
    "ZooKeeperEnsemble",
    "ZooKeeperServer",
    "etcdctl",
    "external_server",
    "free_ports",
    "wait_until",
)
