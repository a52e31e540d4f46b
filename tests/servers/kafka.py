"""A Kafka test broker: one process in KRaft mode, broker and controller combined.

It runs from the jars ``scripts/servers.sh`` caches in ``.services/kafka`` and is set up
for transactions on a single node: every internal topic has replication factor 1 and
min ISR 1, with one partition so that it is created quickly.
"""

from __future__ import annotations

import base64
import subprocess
import uuid
from pathlib import Path
from typing import Final

from ._base import (
    LOOPBACK,
    ProcessServer,
    ServerStartError,
    require_binary,
    require_jars,
    write_lines,
)
from ._wire import kafka_api_versions

__all__ = ("KafkaBroker", "new_cluster_id")

JAVA_OPTIONS: Final = (
    "-Xms64m",
    "-Xmx384m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
)

LOG4J2_PROPERTIES: Final = """\
status = warn
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss.SSS} %-5p [%c{1}] %m%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = warn
logger.controller.name = org.apache.kafka.controller
logger.controller.level = info
"""


def new_cluster_id() -> str:
    """A random Kafka cluster id: 16 random bytes as 22 characters of unpadded URL-safe
    base64, never starting with ``-``.

    ``kafka-storage format --cluster-id -...`` would read such an id as an option, so,
    like Kafka's own ``Uuid.randomUuid()``, draw again (one time in 32).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaBroker(ProcessServer):
    """A single-node Kafka cluster (KRaft, broker + controller in one JVM).

    Its storage is formatted on the first start and kept for restarts.
    """

    kind = "kafka"
    start_timeout = 90.0
    port_names = ("client", "controller")
    fatal_log_markers = ("NoClassDefFoundError", "OutOfMemoryError", "Thread[main,5,main] died")

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        config: dict[str, str] | None = None,
        ports: dict[str, int] | None = None,
    ) -> None:
        super().__init__(name, workdir, ports=ports)
        self.extra_config = dict(config or {})
        self._classpath = require_jars("kafka")
        self._java = require_binary("java")
        self.cluster_id = new_cluster_id()

    @property
    def url(self) -> str:
        return f"kafka://{self.hostport}"

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:PORT"``, what aiokafka's ``bootstrap_servers`` takes."""
        return self.hostport

    @property
    def config_path(self) -> Path:
        return self.workdir / "server.properties"

    def settings(self) -> dict[str, str]:
        client, controller = self.ports["client"], self.ports["controller"]
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{LOOPBACK}:{controller}",
            "listeners": f"PLAINTEXT://{LOOPBACK}:{client},CONTROLLER://{LOOPBACK}:{controller}",
            "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{client}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "share.coordinator.state.topic.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "log.flush.interval.messages": "9223372036854775807",
        }
        settings.update(self.extra_config)
        return settings

    def prepare(self) -> None:
        write_lines(self.config_path, [f"{key}={value}" for key, value in self.settings().items()])
        (self.workdir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        if not (self.data_dir / "meta.properties").exists():
            self._format_storage()

    def _java_command(self, main: str, *args: str) -> list[str]:
        return [
            self._java,
            *JAVA_OPTIONS,
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            self._classpath,
            main,
            *args,
        ]

    def _format_storage(self) -> None:
        command = self._java_command(
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            self.cluster_id,
            "--config",
            str(self.config_path),
            "--ignore-formatted",
        )
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        with self.log_path.open("a") as log:
            log.write(f"=== format storage: {' '.join(command)}\n{result.stdout}{result.stderr}")
        if result.returncode != 0:
            raise ServerStartError(
                f"{self.name}: formatting the storage failed ({result.returncode})\n"
                f"{self.log_tail()}"
            )

    def command(self) -> list[str]:
        return self._java_command("kafka.Kafka", str(self.config_path))

    def probe(self) -> bool:
        return bool(kafka_api_versions(self.port))

    def version(self) -> str:
        """The broker's version, read from the ``kafka-clients`` jar name."""
        libs = Path(self._classpath).parent
        for jar in libs.glob("kafka-clients-*.jar"):
            return jar.stem.removeprefix("kafka-clients-")
        return "unknown"
