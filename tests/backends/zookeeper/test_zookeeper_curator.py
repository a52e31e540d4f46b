"""A Java service using Curator's InterProcessMutex and lockkit exclude each other on
the same path, both ways (scripts/curator/LockProbe.java, run from source)."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.abc
import pytest

import lockkit
from lockkit import LockTimeout

from .helpers import children, raw_client

pytestmark = pytest.mark.zookeeper

ROOT = Path(__file__).resolve().parents[3]
LIBS = ROOT / ".services" / "curator" / "libs"
PROBE = ROOT / "scripts" / "curator" / "LockProbe.java"
#: Curator's protected lock node: _c_<uuid>-lock-<10 digits>
NODE = re.compile(r"^_c_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-lock-\d{10}$")


def _curator_jars() -> Path:
    """The Curator classpath; fetched here if ``make deps`` has not done it yet."""
    if not list(LIBS.glob("*.jar")):
        mvn = shutil.which("mvn")
        assert mvn is not None, "Maven is needed to fetch Curator (make deps installs it)"
        subprocess.run(
            [mvn, "-B", "-q", "-ntp", "-f", str(PROBE.parent / "pom.xml"),
             "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={LIBS}"],
            check=True,
        )  # fmt: skip
    return LIBS


class Probe:
    """The Java side: one command per line, one answer per line."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self._buffer = b""

    async def line(self, timeout: float = 30) -> str:
        assert self.process.stdout is not None
        with anyio.fail_after(timeout):
            while b"\n" not in self._buffer:
                self._buffer += await self.process.stdout.receive()
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode().strip()

    async def send(self, command: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(command.encode() + b"\n")

    async def ask(self, command: str, timeout: float = 30) -> str:
        await self.send(command)
        return await self.line(timeout)


@contextlib.asynccontextmanager
async def curator(hosts: str, path: str) -> AsyncIterator[Probe]:
    java = shutil.which("java")
    assert java is not None, "Java is needed (make deps installs it)"
    classpath = f"{_curator_jars()}/*"
    process = await anyio.open_process([java, "-cp", classpath, str(PROBE), hosts, path])
    probe = Probe(process)
    try:
        assert await probe.line(60) == "ready"
        yield probe
    finally:
        with contextlib.suppress(Exception):
            await probe.send("quit")
        with anyio.move_on_after(10, shield=True):
            await process.wait()
        if process.returncode is None:
            process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
        await process.aclose()


async def test_curator_holds_and_lockkit_waits(zookeeper_server) -> None:
    """Curator holds /locks/<task>: lockkit (root=/locks) cannot take it, queues behind
    it, sees the Java holder in inspect(), and gets the lock when Curator releases."""
    task = f"task-{uuid.uuid4().hex[:8]}"
    async with curator(zookeeper_server.hosts, f"/locks/{task}") as java:
        assert await java.ask("acquire 5000") == "acquired"
        async with lockkit.connect(zookeeper_server.url, root="/locks") as locks:
            with pytest.raises(LockTimeout):
                await locks.lock(task, timeout=0).acquire()
            info = await locks.inspect(task)
            assert info.holder is not None and info.waiters == 0
            got: list[int] = []

            async def wait() -> None:
                async with locks.lock(task, ttl=10, timeout=20) as token:
                    got.append(int(token))

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                with anyio.fail_after(10):
                    while (await locks.inspect(task)).waiters < 1:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                await anyio.sleep(0.3)
                assert not got, "lockkit took a lock Curator holds"
                assert await java.ask("release") == "released"
            assert got and got[0] > info.holder.token


async def test_lockkit_holds_and_curator_waits(zookeeper_server) -> None:
    """lockkit holds the lock at /locks/<task>: Curator's acquire times out, then waits
    in the queue and gets the lock once lockkit releases. Both name their nodes the
    same way (Curator lists lockkit's node as a participant)."""
    task = f"task-{uuid.uuid4().hex[:8]}"
    async with lockkit.connect(zookeeper_server.url, root="/locks") as locks:
        async with curator(zookeeper_server.hosts, f"/locks/{task}") as java:
            lock = locks.lock(task, ttl=10)
            await lock.acquire()
            async with raw_client(zookeeper_server.hosts) as raw:
                nodes = await children(raw, f"/locks/{task}")
                assert len(nodes) == 1 and NODE.match(nodes[0]), nodes
                assert nodes[0] in await java.ask("holder")
                assert await java.ask("acquire 300") == "timeout"
                await java.send("acquire 20000")
                with anyio.fail_after(10):
                    while (await locks.inspect(task)).waiters < 1:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                for node in await children(raw, f"/locks/{task}"):
                    assert NODE.match(node), f"{node!r} is not named as Curator names it"
            await lock.release()
            assert await java.line(10) == "acquired"
            with pytest.raises(LockTimeout):
                await locks.lock(task, timeout=0).acquire()
            assert await java.ask("release") == "released"
        async with locks.lock(task, timeout=5):
            pass
