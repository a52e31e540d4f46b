"""etcd test servers: a single member and a three-member cluster.

Readiness is ``etcdctl endpoint health`` (a linearised read through Raft); the leader
comes from ``etcdctl endpoint status``. Heartbeats every 100 ms and a one-second
election timeout let a cluster replace a killed leader within a couple of seconds.

A single member can serve TLS with a private CA and require client certificates
(``tls=True``: :class:`EtcdTls`, made with ``trustme``), and can have authentication
enabled (:meth:`EtcdServer.enable_auth`); both are for private servers of the
``servers`` pool, so the shared ones stay plain and open.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

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

__all__ = ("EtcdCluster", "EtcdServer", "EtcdTls", "etcdctl", "linearizable_get")


def etcdctl(
    endpoints: list[str], *args: str, timeout: float = 10.0, flags: Sequence[str] = ()
) -> str:
    """Run ``etcdctl --endpoints=... [FLAGS] ARGS`` (API v3) and return its standard
    output; ``flags`` carry TLS files and ``--user``."""
    command = [
        require_binary("etcdctl"),
        f"--endpoints={','.join(endpoints)}",
        "--dial-timeout=2s",
        "--command-timeout=3s",
        *flags,
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


@dataclasses.dataclass(frozen=True)
class EtcdTls:
    """PEM files of a private CA, the server's certificate (IP SAN 127.0.0.1 and name
    ``localhost``) and a client certificate the server accepts."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def create(cls, directory: Path) -> EtcdTls:
        import trustme  # only the TLS tests need it

        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server = ca.issue_cert(LOOPBACK, "localhost")
        client = ca.issue_cert("lockkit-client")
        tls = cls(
            ca=directory / "ca.pem",
            server_cert=directory / "server.pem",
            server_key=directory / "server-key.pem",
            client_cert=directory / "client.pem",
            client_key=directory / "client-key.pem",
        )
        ca.cert_pem.write_to_path(str(tls.ca))
        server.private_key_pem.write_to_path(str(tls.server_key))
        server.cert_chain_pems[0].write_to_path(str(tls.server_cert))
        client.private_key_pem.write_to_path(str(tls.client_key))
        client.cert_chain_pems[0].write_to_path(str(tls.client_cert))
        return tls

    @property
    def query(self) -> str:
        """``ssl_ca_certs=...&ssl_certfile=...&ssl_keyfile=...`` for an etcds:// URL."""
        return urlencode(
            {
                "ssl_ca_certs": str(self.ca),
                "ssl_certfile": str(self.client_cert),
                "ssl_keyfile": str(self.client_key),
            }
        )


class EtcdServer(ProcessServer):
    """One etcd member; a single-member cluster unless ``initial_cluster`` names peers.

    Args:
        initial_cluster: ``{member name: peer port}`` of every member, this one included.
        cluster_token: shared by the members of one cluster.
        tls: serve clients over TLS with these files, requiring client certificates.
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
        tls: EtcdTls | None = None,
    ) -> None:
        super().__init__(name, workdir, ports=ports)
        self.tls = tls
        #: ``(user, password)`` once :meth:`enable_auth` ran; etcdctl then logs in
        self.credentials: tuple[str, str] | None = None
        self.initial_cluster = initial_cluster
        self.cluster_token = cluster_token or f"lockkit-{secrets.token_hex(4)}"
        self._binary = require_binary("etcd")
        require_binary("etcdctl")

    @property
    def url(self) -> str:
        """``etcd://127.0.0.1:PORT``; with TLS ``etcds://...?ssl_ca_certs=...`` (the CA
        and the client certificate); with auth ``user:password@`` as well."""
        auth = ""
        if self.credentials is not None:
            user, password = self.credentials
            auth = f"{quote(user, safe='')}:{quote(password, safe='')}@"
        if self.tls is not None:
            return f"etcds://{auth}{self.hostport}?{self.tls.query}"
        return f"etcd://{auth}{self.hostport}"

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with TLS), the client URL."""
        return f"{'https' if self.tls else 'http'}://{self.hostport}"

    @property
    def ctl_flags(self) -> list[str]:
        """etcdctl flags for this member: its TLS files and ``--user``."""
        flags: list[str] = []
        if self.tls is not None:
            flags += [
                f"--cacert={self.tls.ca}",
                f"--cert={self.tls.client_cert}",
                f"--key={self.tls.client_key}",
            ]
        if self.credentials is not None:
            flags.append(f"--user={self.credentials[0]}:{self.credentials[1]}")
        return flags

    def ctl(self, *args: str, timeout: float = 10.0) -> str:
        """``etcdctl ARGS`` against this member, with its TLS files and credentials."""
        return etcdctl(self.endpoints, *args, timeout=timeout, flags=self.ctl_flags)

    def enable_auth(self, password: str, user: str = "root") -> None:
        """Create ``user`` (``root`` holds the root role) and turn authentication on;
        from then on every client must log in. ``user`` must be ``root``: etcd refuses
        ``auth enable`` without it (other users need roles; not needed here)."""
        if user != "root":
            raise ServerError("etcd needs the root user before auth can be enabled")
        self.ctl("user", "add", user, f"--new-user-password={password}")
        self.ctl("auth", "enable")
        self.credentials = (user, password)

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
            *self._tls_flags(),
        ]

    def _tls_flags(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            f"--cert-file={self.tls.server_cert}",
            f"--key-file={self.tls.server_key}",
            f"--trusted-ca-file={self.tls.ca}",
            "--client-cert-auth",
        ]

    def probe(self) -> bool:
        self.ctl("endpoint", "health")
        return True

    def status(self) -> dict[str, Any]:
        """``etcdctl endpoint status`` of this member: ``{"leader": id, "member_id": id,
        "raft_term": ..., ...}``; ``leader`` is 0 while the member knows no leader (during
        an election), a field etcdctl's JSON then leaves out."""
        output = self.ctl("endpoint", "status", "--write-out=json")
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
