"""Redis test servers: single nodes, independent masters, Sentinel and Cluster."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from ._base import (
    LOOPBACK,
    ProcessServer,
    ServerError,
    ServerGroup,
    ServerStartError,
    require_binary,
    wait_until,
    write_lines,
)
from ._wire import RespValue, info, resp_call

__all__ = (
    "RedisCluster",
    "RedisClusterNode",
    "RedisMasters",
    "RedisSentinel",
    "RedisSentinelGroup",
    "RedisServer",
    "wait_caught_up",
)

SERVICE_NAME: Final = "lockkit"


class RedisServer(ProcessServer):
    """One ``redis-server`` on a free loopback port, without persistence by default.

    Args:
        replicaof: ``(host, port)`` of a primary to replicate from.
        appendonly: keep an append-only file, so :meth:`restart` keeps the data
            (without it a restart starts empty, like a primary that lost its memory).
        config: extra ``redis.conf`` lines.
    """

    kind = "redis"
    start_timeout = 15.0

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        replicaof: tuple[str, int] | None = None,
        appendonly: bool = False,
        config: Sequence[str] = (),
        ports: dict[str, int] | None = None,
    ) -> None:
        super().__init__(name, workdir, ports=ports)
        self.replicaof = replicaof
        self.appendonly = appendonly
        self.config = list(config)
        self._binary = require_binary("redis-server")

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def config_lines(self) -> list[str]:
        self.data_dir.mkdir(exist_ok=True)
        lines = [
            f"bind {LOOPBACK}",
            f"port {self.port}",
            f'dir "{self.data_dir}"',
            "daemonize no",
            'logfile ""',
            'save ""',
            f"appendonly {'yes' if self.appendonly else 'no'}",
            "appendfsync everysec",
            "repl-diskless-sync yes",
            "repl-diskless-sync-delay 0",
        ]
        if self.replicaof is not None:
            lines.append(f"replicaof {self.replicaof[0]} {self.replicaof[1]}")
        return lines + self.config

    def prepare(self) -> None:
        write_lines(self.workdir / "redis.conf", self.config_lines())

    def command(self) -> list[str]:
        return [self._binary, str(self.workdir / "redis.conf")]

    def probe(self) -> bool:
        if self.call("PING") != "PONG":
            return False
        if self.replicaof is not None:
            # A replica counts as ready once it has synchronised with its primary.
            return self.info("replication").get("master_link_status") == "up"
        return True

    def call(self, *args: str | int | bytes) -> RespValue:
        """Run one command on a fresh connection (for harness bookkeeping)."""
        return resp_call(self.port, *args)

    def info(self, section: str = "server") -> dict[str, str]:
        """``INFO section`` as a dict."""
        return info(self.port, section)

    def role(self) -> str:
        """``"master"`` or ``"slave"``, as ``INFO replication`` says."""
        return self.info("replication")["role"]


def wait_caught_up(primary: RedisServer, replicas: Sequence[RedisServer], timeout: float) -> None:
    """Block until every replica has processed the primary's replication stream up to
    the offset it had when this was called."""
    target = int(primary.info("replication")["master_repl_offset"])

    def caught_up() -> bool:
        return all(
            int(node.info("replication").get("slave_repl_offset", "-1")) >= target
            for node in replicas
        )

    wait_until(caught_up, timeout=timeout, what=f"the replicas of {primary.name} to catch up")


class RedisMasters(ServerGroup[RedisServer]):
    """``count`` independent Redis masters, as Redlock wants them."""

    kind = "redlock"

    def __init__(self, name: str, workdir: Path, count: int = 5) -> None:
        super().__init__(name, workdir)
        self.nodes = [
            RedisServer(f"{name}-{index}", workdir / f"node{index}") for index in range(count)
        ]

    @property
    def url(self) -> str:
        """``redlock://host:port,host:port,...``."""
        return "redlock://" + ",".join(node.hostport for node in self.nodes)

    @property
    def urls(self) -> list[str]:
        """``redis://`` URL of each master."""
        return [node.url for node in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def wait_healthy(self, timeout: float = 60.0) -> None:
        for node in self.nodes:
            node.wait_ready(timeout)


# --- Sentinel ------------------------------------------------------------------------


class RedisSentinel(ProcessServer):
    """One Sentinel (``redis-server FILE --sentinel``) watching :data:`SERVICE_NAME`.

    Sentinel rewrites its configuration file as it learns, so the file is written once
    and a restart resumes with what the Sentinel knew.
    """

    kind = "sentinel"
    start_timeout = 15.0

    def __init__(
        self,
        name: str,
        workdir: Path,
        primary: tuple[str, int],
        *,
        service_name: str = SERVICE_NAME,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
    ) -> None:
        super().__init__(name, workdir)
        self.primary_address = primary
        self.service_name = service_name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self._binary = require_binary("redis-server")

    @property
    def url(self) -> str:
        return f"redis+sentinel://{self.hostport}/{self.service_name}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "sentinel.conf"

    def prepare(self) -> None:
        if self.config_path.exists():
            return
        host, port = self.primary_address
        name = self.service_name
        write_lines(
            self.config_path,
            [
                f"bind {LOOPBACK}",
                f"port {self.port}",
                f'dir "{self.workdir}"',
                "daemonize no",
                'logfile ""',
                f"sentinel monitor {name} {host} {port} {self.quorum}",
                f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
                f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {name} 1",
            ],
        )

    def command(self) -> list[str]:
        return [self._binary, str(self.config_path), "--sentinel"]

    def probe(self) -> bool:
        return self.primary() is not None

    def call(self, *args: str | int | bytes) -> RespValue:
        return resp_call(self.port, *args)

    def primary(self) -> tuple[str, int] | None:
        """The primary this Sentinel currently believes in."""
        reply = self.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name)
        if not isinstance(reply, list) or len(reply) != 2:
            return None
        host, port = reply
        if not isinstance(host, bytes) or not isinstance(port, bytes):
            return None
        return (host.decode(), int(port))

    def table(self, what: str) -> list[dict[str, str]]:
        """``SENTINEL REPLICAS|SENTINELS <service>`` as a list of dicts."""
        reply = self.call("SENTINEL", what, self.service_name)
        rows: list[dict[str, str]] = []
        for entry in reply if isinstance(reply, list) else []:
            if isinstance(entry, list):
                flat = [item.decode() if isinstance(item, bytes) else str(item) for item in entry]
                rows.append(dict(zip(flat[::2], flat[1::2], strict=True)))
        return rows


class RedisSentinelGroup(ServerGroup[RedisServer]):
    """A primary, ``replicas`` replicas and ``sentinels`` Sentinels (quorum 2).

    Sentinels declare a primary down after one second, so a killed primary is
    replaced within a few seconds (see :meth:`wait_for_failover`).
    """

    kind = "sentinel"

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        service_name: str = SERVICE_NAME,
    ) -> None:
        super().__init__(name, workdir)
        self.service_name = service_name
        self._replica_count = replicas
        self._sentinel_count = sentinels
        self.sentinels: list[RedisSentinel] = []

    @property
    def processes(self) -> list[ProcessServer]:
        return [*self.nodes, *self.sentinels]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every Sentinel (what ``redis.asyncio.Sentinel`` takes)."""
        return [sentinel.address for sentinel in self.sentinels]

    @property
    def url(self) -> str:
        """``redis+sentinel://host:port,host:port,host:port/<service name>``."""
        hosts = ",".join(sentinel.hostport for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service_name}"

    def start(self) -> None:
        primary = RedisServer(f"{self.name}-redis0", self.workdir / "redis0")
        self.nodes = [primary]
        primary.start()
        for index in range(1, self._replica_count + 1):
            replica = RedisServer(
                f"{self.name}-redis{index}",
                self.workdir / f"redis{index}",
                replicaof=primary.address,
            )
            self.nodes.append(replica)
            replica.start()
        self.sentinels = [
            RedisSentinel(
                f"{self.name}-sentinel{index}",
                self.workdir / f"sentinel{index}",
                primary.address,
                service_name=self.service_name,
                quorum=min(2, self._sentinel_count),
            )
            for index in range(self._sentinel_count)
        ]
        for sentinel in self.sentinels:
            sentinel.start(wait=False)
        for sentinel in self.sentinels:
            sentinel.wait_ready()
        self.wait_healthy()

    def _node_at(self, address: tuple[str, int]) -> RedisServer:
        for node in self.nodes:
            if node.port == address[1]:
                return node
        raise ServerError(f"{self.name}: no node listens on {address[0]}:{address[1]}")

    def primary(self) -> RedisServer:
        """The node that a majority of the running Sentinels names as primary."""
        votes: dict[tuple[str, int], int] = {}
        for sentinel in self.sentinels:
            if sentinel.is_running and not sentinel.is_paused:
                try:
                    address = sentinel.primary()
                except OSError:
                    continue
                if address is not None:
                    votes[address] = votes.get(address, 0) + 1
        if not votes:
            raise ServerError(f"{self.name}: no Sentinel answered")
        address, count = max(votes.items(), key=lambda item: item[1])
        if count * 2 <= len(self.sentinels):
            raise ServerError(f"{self.name}: the Sentinels disagree on the primary: {votes}")
        return self._node_at(address)

    def replicas(self) -> list[RedisServer]:
        """Every node but the current primary."""
        primary = self.primary()
        return [node for node in self.nodes if node is not primary]

    def wait_replicated(self, timeout: float = 10.0) -> None:
        """Block until every replica has what the primary has written so far."""
        primary = self.primary()
        wait_caught_up(primary, [node for node in self.nodes if node is not primary], timeout)

    def wait_for_failover(self, old: RedisServer, timeout: float = 30.0) -> RedisServer:
        """Wait until every running Sentinel names a primary other than ``old`` and that
        node has taken the role; return it."""

        def promoted() -> RedisServer | None:
            answers = {
                sentinel.primary()
                for sentinel in self.sentinels
                if sentinel.is_running and not sentinel.is_paused
            }
            if len(answers) != 1:
                return None
            (address,) = answers
            if address is None or address[1] == old.port:
                return None
            node = self._node_at(address)
            return node if node.role() == "master" else None

        return wait_until(
            promoted, timeout=timeout, what=f"{self.name} to fail over", context=self.log_tail
        )

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Every Sentinel agrees on the primary, knows every other Sentinel and sees
        every replica up and synchronised."""
        others = len(self.sentinels) - 1
        replicas = len(self.nodes) - 1

        def healthy() -> bool:
            primaries = {sentinel.primary() for sentinel in self.sentinels}
            if len(primaries) != 1 or None in primaries:
                return False
            (address,) = primaries
            assert address is not None
            primary = self._node_at(address)
            if primary.role() != "master":
                return False
            if int(primary.info("replication").get("connected_slaves", "0")) != replicas:
                return False
            for node in self.nodes:
                if node is not primary and (
                    node.role() != "slave"
                    or node.info("replication").get("master_link_status") != "up"
                ):
                    return False
            for sentinel in self.sentinels:
                if len(sentinel.table("SENTINELS")) != others:
                    return False
                seen = sentinel.table("REPLICAS")
                up = [row for row in seen if row.get("flags") == "slave"]
                if len(up) != replicas or len(seen) != replicas:
                    return False
            return True

        wait_until(
            healthy, timeout=timeout, what=f"{self.name} to be healthy", context=self.log_tail
        )

    def heal(self, timeout: float = 60.0) -> None:
        """Resume paused processes, restart stopped ones (a stopped node comes back as a
        replica of the current primary), wait until healthy."""
        for process in self.processes:
            if process.is_paused:
                process.resume()
        for sentinel in self.sentinels:
            if not sentinel.is_running:
                sentinel.start(wait=False)
        for sentinel in self.sentinels:
            sentinel.wait_ready()
        primary = wait_until(
            self._primary_or_none, timeout=timeout, what=f"{self.name} Sentinels to agree"
        )
        if not primary.is_running:
            # The primary is down and nobody was promoted: bring it back as primary.
            primary.replicaof = None
            primary.start()
        for node in self.nodes:
            if node is primary:
                continue
            node.replicaof = primary.address
            if not node.is_running:
                node.start()
            elif node.role() == "master":
                # A resumed former primary: demote it now rather than wait for the
                # Sentinels to notice (they take several seconds).
                node.call("REPLICAOF", *primary.address)
        self.wait_healthy(timeout)

    def _primary_or_none(self) -> RedisServer | None:
        try:
            return self.primary()
        except ServerError:
            return None


# --- Cluster -------------------------------------------------------------------------


class RedisClusterNode(RedisServer):
    """A ``cluster-enabled`` Redis node; its cluster bus gets a port of its own."""

    kind = "redis-cluster"
    port_names = ("client", "bus")

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        node_timeout_ms: int = 1500,
        appendonly: bool = False,
    ) -> None:
        super().__init__(name, workdir, appendonly=appendonly)
        self.node_timeout_ms = node_timeout_ms

    def config_lines(self) -> list[str]:
        return [
            *super().config_lines(),
            "cluster-enabled yes",
            f"cluster-port {self.ports['bus']}",
            f'cluster-config-file "{self.workdir / "nodes.conf"}"',
            f"cluster-node-timeout {self.node_timeout_ms}",
            "cluster-replica-validity-factor 0",
        ]

    def probe(self) -> bool:
        return self.call("PING") == "PONG"

    def cluster_info(self) -> dict[str, str]:
        reply = self.call("CLUSTER", "INFO")
        if not isinstance(reply, bytes):
            raise ServerError(f"unexpected CLUSTER INFO reply {reply!r}")
        pairs = (line.partition(":") for line in reply.decode().splitlines())
        return {key: value.strip() for key, _, value in pairs if key}

    def cluster_nodes(self) -> list[dict[str, str]]:
        """``CLUSTER NODES``: one dict per node with ``id``, ``port``, ``flags``,
        ``master`` (the id of its master, or ``-``) and ``link``."""
        reply = self.call("CLUSTER", "NODES")
        if not isinstance(reply, bytes):
            raise ServerError(f"unexpected CLUSTER NODES reply {reply!r}")
        rows = []
        for line in reply.decode().splitlines():
            fields = line.split()
            address = fields[1].split("@")[0]
            rows.append(
                {
                    "id": fields[0],
                    "port": address.rpartition(":")[2],
                    "flags": fields[2],
                    "master": fields[3],
                    "link": fields[7],
                    "slots": " ".join(fields[8:]),
                }
            )
        return rows


class RedisCluster(ServerGroup[RedisClusterNode]):
    """A Redis Cluster of ``masters`` masters with ``replicas_per_master`` replicas each,
    every slot assigned; a killed master is replaced by its replica within seconds."""

    kind = "redis-cluster"

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        masters: int = 3,
        replicas_per_master: int = 1,
    ) -> None:
        super().__init__(name, workdir)
        self.master_count = masters
        self.replicas_per_master = replicas_per_master
        count = masters * (1 + replicas_per_master)
        self.nodes = [
            RedisClusterNode(f"{name}-{index}", workdir / f"node{index}") for index in range(count)
        ]

    @property
    def url(self) -> str:
        """``redis+cluster://host:port,...`` naming every node."""
        return "redis+cluster://" + ",".join(node.hostport for node in self.nodes)

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node (for ``redis.asyncio.cluster.ClusterNode``)."""
        return [node.address for node in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = require_binary("redis-cli")
        command = [
            cli,
            "--cluster",
            "create",
            *(node.hostport for node in self.nodes),
            "--cluster-replicas",
            str(self.replicas_per_master),
            "--cluster-yes",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise ServerStartError(
                f"{self.name}: `redis-cli --cluster create` failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n{self.log_tail()}"
            )
        self.wait_healthy()

    def _live_node(self) -> RedisClusterNode:
        for node in self.nodes:
            if node.is_running and not node.is_paused:
                return node
        raise ServerError(f"{self.name}: no node is running")

    def _by_port(self, port: int) -> RedisClusterNode:
        for node in self.nodes:
            if node.port == port:
                return node
        raise ServerError(f"{self.name}: no node on port {port}")

    def masters(self) -> list[RedisClusterNode]:
        """The nodes currently serving slots as masters (failed ones left out)."""
        rows = self._live_node().cluster_nodes()
        return [
            self._by_port(int(row["port"]))
            for row in rows
            if "master" in row["flags"] and "fail" not in row["flags"] and row["slots"]
        ]

    def replicas(self) -> list[RedisClusterNode]:
        """The nodes currently replicating a master."""
        rows = self._live_node().cluster_nodes()
        return [
            self._by_port(int(row["port"]))
            for row in rows
            if "slave" in row["flags"] and "fail" not in row["flags"]
        ]

    def primary(self, key: str | bytes = "") -> RedisClusterNode:
        """Alias of :meth:`master_for`."""
        return self.master_for(key)

    def master_for(self, key: str | bytes) -> RedisClusterNode:
        """The master currently serving ``key``'s slot."""
        node = self._live_node()
        slot = node.call("CLUSTER", "KEYSLOT", key)
        reply = node.call("CLUSTER", "SLOTS")
        for entry in reply if isinstance(reply, list) else []:
            if not isinstance(entry, list) or len(entry) < 3:
                continue
            low, high, master = entry[0], entry[1], entry[2]
            if (
                isinstance(low, int)
                and isinstance(high, int)
                and isinstance(slot, int)
                and low <= slot <= high
                and isinstance(master, list)
                and isinstance(master[1], int)
            ):
                return self._by_port(master[1])
        raise ServerError(f"{self.name}: no master serves slot {slot!r}")

    def _view_is_whole(self, rows: list[dict[str, str]]) -> bool:
        """Whether one node's ``CLUSTER NODES`` shows every node connected and unflagged,
        ``master_count`` masters owning slots and every other node replicating."""
        if len(rows) != len(self.nodes):
            return False
        if any("fail" in row["flags"] or row["link"] != "connected" for row in rows):
            return False
        masters = [row for row in rows if "master" in row["flags"] and row["slots"]]
        replicas = [row for row in rows if "slave" in row["flags"]]
        return (
            len(masters) == self.master_count
            and len(replicas) == self.master_count * self.replicas_per_master
        )

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Every node says ``cluster_state:ok`` with all slots served, and sees the same
        whole picture: every node connected, every master with its replicas, which are
        synchronised."""

        def healthy() -> bool:
            for node in self.nodes:
                state = node.cluster_info()
                if state.get("cluster_state") != "ok" or state.get("cluster_slots_ok") != "16384":
                    return False
                if not self._view_is_whole(node.cluster_nodes()):
                    return False
            return all(
                node.info("replication").get("master_link_status") == "up"
                for node in self.nodes
                if node.role() == "slave"
            )

        wait_until(
            healthy, timeout=timeout, what=f"{self.name} to be healthy", context=self.log_tail
        )

    def wait_for_failover(self, old: RedisClusterNode, timeout: float = 30.0) -> None:
        """Wait until every running node says ``cluster_state:ok`` and sees the slots
        of ``old`` served by another master (one of its replicas, promoted)."""

        def recovered() -> bool:
            for node in self.nodes:
                if node is old or not node.is_running or node.is_paused:
                    continue
                if node.cluster_info().get("cluster_state") != "ok":
                    return False
                serving = [
                    row for row in node.cluster_nodes() if "master" in row["flags"] and row["slots"]
                ]
                if len(serving) != self.master_count:
                    return False
                if any("fail" in row["flags"] or int(row["port"]) == old.port for row in serving):
                    return False
            return True

        wait_until(
            recovered, timeout=timeout, what=f"{self.name} to fail over", context=self.log_tail
        )

    def replicas_of(self, master: RedisClusterNode) -> list[RedisClusterNode]:
        """The nodes replicating ``master``."""
        rows = self._live_node().cluster_nodes()
        master_id = next(row["id"] for row in rows if int(row["port"]) == master.port)
        return [
            self._by_port(int(row["port"]))
            for row in rows
            if row["master"] == master_id and "fail" not in row["flags"]
        ]

    def wait_replicated(self, key: str | bytes, timeout: float = 10.0) -> None:
        """Block until the replicas of ``key``'s master have everything it has written."""
        master = self.master_for(key)
        wait_caught_up(master, self.replicas_of(master), timeout)
