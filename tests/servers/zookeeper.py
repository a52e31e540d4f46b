"""ZooKeeper test servers: a standalone server and a quorum ensemble.

The servers run from the jars ``scripts/servers.sh`` caches in ``.services/zookeeper``
with a small heap. Ticks are short (500 ms) so that leader election and session expiry
happen within seconds, while sessions may still ask for up to 60 s. Every four-letter
command is enabled: ``srvr`` tells readiness and the leader, ``mntr`` the details.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from ._base import (
    LOOPBACK,
    ProcessServer,
    ServerError,
    ServerGroup,
    free_ports,
    require_binary,
    require_jars,
    wait_until,
    write_lines,
)
from ._wire import four_letter_word

__all__ = ("ZooKeeperEnsemble", "ZooKeeperServer")

JAVA_OPTIONS: Final = (
    "-Xms32m",
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
    "-Dzookeeper.admin.enableServer=false",
    "-Dzookeeper.jmx.log4j.disable=true",
)
TICK_MS: Final = 500

LOGBACK_XML: Final = """<configuration>
  <appender name="CONSOLE" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d{HH:mm:ss.SSS} %-5level [%thread] %logger{20} - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="CONSOLE"/></root>
</configuration>
"""

_MODE = re.compile(r"^Mode: (\w+)", re.MULTILINE)


class ZooKeeperServer(ProcessServer):
    """One ZooKeeper server; standalone unless ``peers`` names an ensemble.

    Args:
        myid: this server's id in the ensemble (``server.<myid>``).
        peers: ``{myid: (quorum_port, election_port)}`` of every member, this one
            included; ``None`` for a standalone server.
    """

    kind = "zookeeper"
    start_timeout = 45.0
    port_names = ("client", "quorum", "election")
    fatal_log_markers = ("NoClassDefFoundError", "OutOfMemoryError", "Thread[main,5,main] died")

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        myid: int = 1,
        peers: dict[int, tuple[int, int]] | None = None,
        ports: dict[str, int] | None = None,
        max_session_timeout_ms: int = 60_000,
    ) -> None:
        super().__init__(name, workdir, ports=ports)
        self.myid = myid
        self.peers = peers
        self.max_session_timeout_ms = max_session_timeout_ms
        self._classpath = require_jars("zookeeper")
        self._java = require_binary("java")

    @property
    def url(self) -> str:
        return f"zookeeper://{self.hostport}"

    @property
    def hosts(self) -> str:
        """``"host:port"``, the connect string ZooKeeper clients take."""
        return self.hostport

    def prepare(self) -> None:
        self.data_dir.mkdir(exist_ok=True)
        (self.data_dir / "myid").write_text(f"{self.myid}\n")
        (self.workdir / "logback.xml").write_text(LOGBACK_XML)
        lines = [
            f"tickTime={TICK_MS}",
            "initLimit=20",
            "syncLimit=4",
            f"minSessionTimeout={2 * TICK_MS}",
            f"maxSessionTimeout={self.max_session_timeout_ms}",
            f"dataDir={self.data_dir}",
            f"clientPort={self.port}",
            f"clientPortAddress={LOOPBACK}",
            "maxClientCnxns=0",
            "4lw.commands.whitelist=*",
            "admin.enableServer=false",
            "reconfigEnabled=false",
            # a test server's log need not survive a power cut: no fsync per write, so
            # tests and benchmarks measure the clients, not this machine's disk
            "forceSync=no",
        ]
        if self.peers:
            lines.append("standaloneEnabled=false")
            for myid, (quorum, election) in sorted(self.peers.items()):
                lines.append(f"server.{myid}={LOOPBACK}:{quorum}:{election}")
        write_lines(self.workdir / "zoo.cfg", lines)

    def command(self) -> list[str]:
        return [
            self._java,
            *JAVA_OPTIONS,
            f"-Dlogback.configurationFile={self.workdir / 'logback.xml'}",
            "-cp",
            self._classpath,
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            str(self.workdir / "zoo.cfg"),
        ]

    def command_4lw(self, word: str) -> str:
        """Send a four-letter command (``srvr``, ``mntr``, ``stat``, ``ruok``...)."""
        return four_letter_word(self.port, word)

    def mode(self) -> str | None:
        """``"standalone"``, ``"leader"`` or ``"follower"``; ``None`` while not serving."""
        match = _MODE.search(self.command_4lw("srvr"))
        return match.group(1) if match else None

    def probe(self) -> bool:
        return self.mode() is not None


class ZooKeeperEnsemble(ServerGroup[ZooKeeperServer]):
    """``size`` ZooKeeper servers forming one quorum."""

    kind = "zookeeper-ensemble"

    def __init__(self, name: str, workdir: Path, size: int = 3) -> None:
        super().__init__(name, workdir, size)

    @property
    def hosts(self) -> str:
        """The connect string ZooKeeper clients take."""
        return self.hostports

    @property
    def url(self) -> str:
        return f"zookeeper://{self.hosts}"

    def _build(self) -> None:
        ports = free_ports(3 * self.size)
        peers = {
            myid: (ports[3 * index + 1], ports[3 * index + 2])
            for index, myid in enumerate(range(1, self.size + 1))
        }
        self.nodes = [
            ZooKeeperServer(
                f"{self.name}-{myid}",
                self.workdir / f"node{myid}",
                myid=myid,
                peers=peers,
                ports={
                    "client": ports[3 * index],
                    "quorum": peers[myid][0],
                    "election": peers[myid][1],
                },
            )
            for index, myid in enumerate(range(1, self.size + 1))
        ]

    def start(self) -> None:
        """Start every member at once and wait until the quorum serves."""
        self._start_together()

    def leader(self) -> ZooKeeperServer:
        """The member whose ``srvr`` says ``Mode: leader``."""
        for node in self.nodes:
            if node.is_running and not node.is_paused:
                try:
                    if node.mode() == "leader":
                        return node
                except OSError:
                    continue
        raise ServerError(f"{self.name} has no leader right now")

    def followers(self) -> list[ZooKeeperServer]:
        leader = self.leader()
        return [node for node in self.nodes if node is not leader]

    def wait_for_leader(
        self, exclude: ZooKeeperServer | None = None, timeout: float = 30.0
    ) -> ZooKeeperServer:
        """Wait until a member other than ``exclude`` leads and a quorum serves."""

        def elected() -> ZooKeeperServer | None:
            leader = self.leader()
            if leader is exclude:
                return None
            serving = [
                node
                for node in self.nodes
                if node.is_running and not node.is_paused and node.mode() is not None
            ]
            return leader if len(serving) * 2 > len(self.nodes) else None

        return wait_until(
            elected, timeout=timeout, what=f"{self.name} to elect a leader", context=self.log_tail
        )

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Every member serves, one leads, the others follow."""

        def healthy() -> bool:
            modes = sorted(str(node.mode()) for node in self.nodes)
            return modes == sorted(["leader"] + ["follower"] * (len(self.nodes) - 1))

        wait_until(
            healthy, timeout=timeout, what=f"{self.name} to be healthy", context=self.log_tail
        )
