"""ServerPool: starts servers in one temporary directory and stops them all at the end."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
import urllib.request
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from ._base import ExternalServer, ProcessServer, ServerError, ServerGroup, ServerHandle
from ._wire import four_letter_word, kafka_api_versions, resp_call
from .etcd import EtcdCluster, EtcdServer, EtcdTls
from .kafka import KafkaBroker
from .postgres import PostgresServer, psql
from .redis import RedisCluster, RedisMasters, RedisSentinelGroup, RedisServer
from .zookeeper import ZooKeeperEnsemble, ZooKeeperServer

__all__ = (
    "ExternalEtcd",
    "ExternalKafka",
    "ExternalPostgres",
    "ExternalRedis",
    "ExternalZooKeeper",
    "ServerPool",
    "external_server",
)

Owned = ServerHandle | ServerGroup[ProcessServer]
S = TypeVar("S", bound=ProcessServer)
G = TypeVar("G", bound=ServerGroup)  # type: ignore[type-arg]

#: Set to keep the servers' directories (configuration, data, logs) after the run.
KEEP_VARIABLE = "LOCKKIT_KEEP_SERVER_DIRS"


class ServerPool:
    """Starts servers on demand and owns them until :meth:`close`.

    Every server gets a directory under one temporary root, removed on close unless
    ``LOCKKIT_KEEP_SERVER_DIRS`` is set. Each factory method starts the server(s) and
    returns once they serve.
    """

    active: weakref.WeakSet[ServerPool] = weakref.WeakSet()

    def __init__(self, label: str) -> None:
        self.label = label
        self.root = Path(tempfile.mkdtemp(prefix=f"lockkit-{label}-"))
        self.owned: list[Owned] = []
        self._counter = itertools.count(1)
        self._closed = False
        ServerPool.active.add(self)

    def _workdir(self, kind: str) -> tuple[str, Path]:
        name = f"{kind}{next(self._counter)}"
        return name, self.root / name

    def _start_server(self, factory: Callable[[str, Path], S], kind: str) -> S:
        name, workdir = self._workdir(kind)
        server = factory(name, workdir)
        self.owned.append(server)
        server.start()
        return server

    def _start_group(self, factory: Callable[[str, Path], G], kind: str) -> G:
        name, workdir = self._workdir(kind)
        group = factory(name, workdir)
        self.owned.append(group)
        group.start()
        return group

    # -- singles ----------------------------------------------------------------------

    def redis(self, *, appendonly: bool = False, config: tuple[str, ...] = ()) -> RedisServer:
        """A standalone Redis; ``appendonly=True`` keeps data across :meth:`restart`."""
        return self._start_server(
            lambda name, path: RedisServer(name, path, appendonly=appendonly, config=config),
            "redis",
        )

    def zookeeper(self) -> ZooKeeperServer:
        """A standalone ZooKeeper server."""
        return self._start_server(ZooKeeperServer, "zookeeper")

    def etcd(self, *, tls: bool = False, password: str | None = None) -> EtcdServer:
        """A single-member etcd cluster; ``tls=True`` serves TLS with a private CA and
        requires client certificates (``server.tls``); ``password`` enables
        authentication with user ``root`` (``server.credentials``, ``server.url``)."""
        server = self._start_server(
            lambda name, path: EtcdServer(
                name, path, tls=EtcdTls.create(path / "tls") if tls else None
            ),
            "etcd",
        )
        if password is not None:
            server.enable_auth(password)
        return server

    def kafka(self, config: dict[str, str] | None = None) -> KafkaBroker:
        """A single KRaft Kafka broker, ready for transactions."""
        return self._start_server(
            lambda name, path: KafkaBroker(name, path, config=config), "kafka"
        )

    def postgres(self, config: dict[str, str] | None = None) -> PostgresServer:
        """A PostgreSQL server with a database ``lockkit`` (``server.url``)."""
        return self._start_server(
            lambda name, path: PostgresServer(name, path, config=config), "postgres"
        )

    # -- groups -----------------------------------------------------------------------

    def redis_masters(self, count: int = 5) -> RedisMasters:
        """``count`` independent Redis masters (Redlock)."""
        return self._start_group(
            lambda name, path: RedisMasters(name, path, count=count), "redlock"
        )

    def redis_sentinel(self, *, replicas: int = 1, sentinels: int = 3) -> RedisSentinelGroup:
        """A primary with ``replicas`` replicas watched by ``sentinels`` Sentinels."""
        return self._start_group(
            lambda name, path: RedisSentinelGroup(
                name, path, replicas=replicas, sentinels=sentinels
            ),
            "sentinel",
        )

    def redis_cluster(self, *, masters: int = 3, replicas_per_master: int = 1) -> RedisCluster:
        """A Redis Cluster with every slot assigned and ``cluster_state:ok``."""
        return self._start_group(
            lambda name, path: RedisCluster(
                name, path, masters=masters, replicas_per_master=replicas_per_master
            ),
            "rcluster",
        )

    def zookeeper_ensemble(self, size: int = 3) -> ZooKeeperEnsemble:
        """A ZooKeeper quorum of ``size`` servers."""
        return self._start_group(
            lambda name, path: ZooKeeperEnsemble(name, path, size=size), "zkensemble"
        )

    def etcd_cluster(self, size: int = 3) -> EtcdCluster:
        """An etcd cluster of ``size`` members."""
        return self._start_group(
            lambda name, path: EtcdCluster(name, path, size=size), "etcdcluster"
        )

    # -- upkeep -----------------------------------------------------------------------

    def heal(self) -> None:
        """Bring back whatever a test stopped, killed or paused."""
        for item in self.owned:
            if item.needs_heal:
                item.heal()

    def processes(self) -> Iterator[ProcessServer]:
        for item in self.owned:
            if isinstance(item, ServerGroup):
                yield from item.processes
            elif isinstance(item, ProcessServer):
                yield item

    def close(self) -> None:
        """Stop every server (even half-started ones) and remove the directory."""
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []
        for process in self.processes():
            try:
                process.stop(timeout=15)
            except Exception as exc:  # keep stopping the others
                errors.append(exc)
                with contextlib.suppress(Exception):
                    process.kill()
        if not os.environ.get(KEEP_VARIABLE):
            shutil.rmtree(self.root, ignore_errors=True)
        ServerPool.active.discard(self)
        if errors:
            raise ServerError(f"{len(errors)} server(s) did not stop cleanly: {errors!r}")


# --- servers named by LOCKKIT_TEST_* ----------------------------------------------------


class ExternalRedis(ExternalServer):
    kind = "redis"

    def ping(self) -> None:
        if resp_call(self.port, "PING") != "PONG":
            raise ServerError(f"{self.name} did not answer PING")


class ExternalZooKeeper(ExternalServer):
    kind = "zookeeper"

    @property
    def hosts(self) -> str:
        return self.hostport

    def ping(self) -> None:
        if "Mode:" not in four_letter_word(self.port, "srvr", self.host):
            raise ServerError(f"{self.name} is not serving")


class ExternalEtcd(ExternalServer):
    kind = "etcd"

    @property
    def endpoint(self) -> str:
        return f"http://{self.hostport}"

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint]

    def ping(self) -> None:
        with urllib.request.urlopen(f"{self.endpoint}/health", timeout=3) as response:
            body = response.read()
        if b'"true"' not in body:
            raise ServerError(f"{self.name} is not healthy: {body!r}")


class ExternalKafka(ExternalServer):
    kind = "kafka"

    @property
    def bootstrap_servers(self) -> str:
        return self.hostport

    def ping(self) -> None:
        kafka_api_versions(self.port, self.host)


class ExternalPostgres(ExternalServer):
    kind = "postgres"

    def ping(self) -> None:
        if psql(self.url, "SELECT 1", timeout=5) != "1":
            raise ServerError(f"{self.name} did not answer SELECT 1")


_EXTERNAL = {
    "redis": ("LOCKKIT_TEST_REDIS_URL", ExternalRedis, 6379),
    "zookeeper": ("LOCKKIT_TEST_ZOOKEEPER_URL", ExternalZooKeeper, 2181),
    "etcd": ("LOCKKIT_TEST_ETCD_URL", ExternalEtcd, 2379),
    "kafka": ("LOCKKIT_TEST_KAFKA_BOOTSTRAP", ExternalKafka, 9092),
    "postgres": ("LOCKKIT_TEST_POSTGRES_URL", ExternalPostgres, 5432),
}


def external_server(kind: str) -> ExternalServer | None:
    """The server a ``LOCKKIT_TEST_*`` variable names for ``kind``, checked with one
    round trip; ``None`` when the variable is unset."""
    variable, cls, default_port = _EXTERNAL[kind]
    value = os.environ.get(variable, "").strip()
    if not value:
        return None
    if kind == "kafka":
        first = value.split(",")[0]
        host, _, port_text = first.rpartition(":")
        host, port = host or first, int(port_text or default_port)
        url = f"kafka://{value}"
    else:
        parts = urlsplit(value)
        first = parts.netloc.rpartition("@")[2].split(",")[0]
        host, _, port_text = first.rpartition(":")
        if not host:
            host, port_text = first, ""
        port = int(port_text or default_port)
        url = value
    server = cls(f"external-{kind}", host, port, url, variable)
    try:
        server.ping()
    except (OSError, ServerError) as exc:
        raise ServerError(
            f"${variable}={value!r} names a server that does not answer: {exc}"
        ) from exc
    return server
