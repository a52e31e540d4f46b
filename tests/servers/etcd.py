"""etcd test servers: a single member and a three-member cluster.

Readiness is ``etcdctl endpoint health`` (a linearised read through Raft); the leader
comes from ``etcdctl endpoint status``. Heartbeats every 100 ms and a one-second
election timeout let a cluster replace a killed leader within a couple of seconds.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._base import (
    LOOPBACK,
    ProcessServer,
    ServerError,
    ServerGroup,
    free_ports,
    require_binary,
    wait_until,
)

if TYPE_CHECKING:
    from etcetra.client import EtcdCommunicator

__all__ = ("EtcdCluster", "EtcdServer", "etcdctl", "linearizable_get")


def etcdctl(endpoints: list[str], *args: str, timeout: float = 10.0) -> str:
    """Run ``etcdctl --endpoints=... ARGS`` (API v3) and return its standard output."""
    command = [
        require_binary("etcdctl"),
        f"--endpoints={','.join(endpoints)}",
        "--dial-timeout=2s",
        "--command-timeout=3s",
        *args,
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )
    if result.returncode != 0:
        raise ServerError(f"`etcdctl {' '.join(args)}` failed: {result.stderr.strip()}")
    return result.stdout


async def linearizable_get(
    etcd: EtcdCommunicator, key: str, *, timeout: float | None = None
) -> str | None:
    """The value of ``key`` read through Raft, as of now, on any member.

    ``etcd`` is an etcetra ``EtcdCommunicator``. Its own ``get`` always sends a
    *serializable* range request, which a member answers from its local store: a follower
    that has not yet applied a committed write returns the old value. A linearizable read
    (``serializable=False``) waits until the member has applied everything the leader had
    committed when the read arrived, and fails if there is no quorum to confirm that.
    ``timeout`` is the gRPC deadline in seconds.
    """
    from etcetra.grpc_api import rpc_pb2, rpc_pb2_grpc  # grpc is slow to import

    stub = rpc_pb2_grpc.KVStub(etcd.channel)
    request = rpc_pb2.RangeRequest(key=key.encode(), serializable=False)
    response = await stub.Range(request, timeout=timeout)
    return response.kvs[0].value.decode() if response.kvs else None


class EtcdServer(ProcessServer):
    """One etcd member; a single-member cluster unless ``initial_cluster`` names peers.

    Args:
        initial_cluster: ``{member name: peer port}`` of every member, this one included.
        cluster_token: shared by the members of one cluster.
    """

    kind = "etcd"
    start_timeout = 30.0
    port_names = ("client", "peer")

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        initial_cluster: dict[str, int] | None = None,
        cluster_token: str | None = None,
        ports: dict[str, int] | None = None,
    ) -> None:
        super().__init__(name, workdir, ports=ports)
        self.initial_cluster = initial_cluster
        self.cluster_token = cluster_token or f"lockkit-{secrets.token_hex(4)}"
        self._binary = require_binary("etcd")
        require_binary("etcdctl")

    @property
    def url(self) -> str:
        return f"etcd://{self.hostport}"

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``, the client URL."""
        return f"http://{self.hostport}"

    @property
    def endpoints(self) -> list[str]:
        """``[endpoint]``, for symmetry with :attr:`EtcdCluster.endpoints`."""
        return [self.endpoint]

    def command(self) -> list[str]:
        peer_url = f"http://{LOOPBACK}:{self.ports['peer']}"
        cluster = self.initial_cluster or {self.name: self.ports["peer"]}
        initial = ",".join(f"{name}=http://{LOOPBACK}:{port}" for name, port in cluster.items())
        return [
            self._binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.endpoint}",
            f"--advertise-client-urls={self.endpoint}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-token={self.cluster_token}",
            "--initial-cluster-state=new",
            "--heartbeat-interval=100",
            "--election-timeout=1000",
            "--snapshot-count=10000",
            "--logger=zap",
            "--log-outputs=stderr",
        ]

    def probe(self) -> bool:
        etcdctl([self.endpoint], "endpoint", "health")
        return True

    def status(self) -> dict[str, Any]:
        """``etcdctl endpoint status`` of this member: ``{"leader": id, "member_id": id,
        "raft_term": ..., ...}``; ``leader`` is 0 while the member knows no leader (during
        an election), a field etcdctl's JSON then leaves out."""
        output = etcdctl([self.endpoint], "endpoint", "status", "--write-out=json")
        entries: list[dict[str, Any]] = json.loads(output)
        status: dict[str, Any] = entries[0]["Status"]
        return {
            "member_id": status["header"]["member_id"],
            "leader": status.get("leader", 0),
            "raft_term": status.get("raft_term"),
            "raft_index": status.get("raftIndex", status.get("raft_index")),
        }


class EtcdCluster(ServerGroup[EtcdServer]):
    """``size`` etcd members forming one Raft cluster."""

    kind = "etcd-cluster"

    def __init__(self, name: str, workdir: Path, size: int = 3) -> None:
        super().__init__(name, workdir, size)

    @property
    def endpoints(self) -> list[str]:
        """``http://host:port`` of every member."""
        return [node.endpoint for node in self.nodes]

    @property
    def url(self) -> str:
        return f"etcd://{self.hostports}"

    def _build(self) -> None:
        ports = free_ports(2 * self.size)
        names = [f"{self.name}-{index}" for index in range(self.size)]
        cluster = {name: ports[2 * index + 1] for index, name in enumerate(names)}
        token = f"lockkit-{secrets.token_hex(4)}"
        self.nodes = [
            EtcdServer(
                name,
                self.workdir / name,
                initial_cluster=cluster,
                cluster_token=token,
                ports={"client": ports[2 * index], "peer": cluster[name]},
            )
            for index, name in enumerate(names)
        ]

    def start(self) -> None:
        """Start every member at once and wait until the quorum serves."""
        self._start_together()

    def leader(self) -> EtcdServer:
        """The member every reachable member names as leader."""
        live = [node for node in self.nodes if node.is_running and not node.is_paused]
        members: dict[int, EtcdServer] = {}
        leaders: set[int] = set()
        for node in live:
            try:
                status = node.status()
            except ServerError:
                continue
            members[status["member_id"]] = node
            leaders.add(status["leader"])
        if 0 in leaders:
            raise ServerError(f"{self.name}: a member has no leader (an election is on)")
        if len(leaders) != 1:
            raise ServerError(f"{self.name}: no agreed leader ({leaders or 'no answer'})")
        (leader_id,) = leaders
        if leader_id not in members:
            raise ServerError(f"{self.name}: the leader {leader_id:x} is not reachable")
        return members[leader_id]

    def wait_for_leader(
        self, exclude: EtcdServer | None = None, timeout: float = 30.0
    ) -> EtcdServer:
        """Wait until the reachable members agree on a leader other than ``exclude``."""

        def elected() -> EtcdServer | None:
            leader = self.leader()
            return None if leader is exclude else leader

        return wait_until(
            elected, timeout=timeout, what=f"{self.name} to elect a leader", context=self.log_tail
        )

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Every member answers a health check, and they agree on the leader."""

        def healthy() -> bool:
            etcdctl(self.endpoints, "endpoint", "health")
            self.leader()
            return True

        wait_until(
            healthy, timeout=timeout, what=f"{self.name} to be healthy", context=self.log_tail
        )
