"""The operator's commands against real servers: ``inspect`` shows a queue of waiters
from other processes with their host and pid, ``list`` finds held names, ``watch``
follows changes, ``release --force`` breaks a lock (its holder learns it, the next
waiter gets a higher token). The CLI runs as ``python -m lockkit``, as an operator runs
it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import lockkit

ROOT = Path(__file__).resolve().parents[2]

BACKENDS = [
    pytest.param("redis_server", marks=pytest.mark.redis, id="redis"),
    pytest.param("zookeeper_server", marks=pytest.mark.zookeeper, id="zookeeper"),
    pytest.param("etcd_server", marks=pytest.mark.etcd, id="etcd"),
    pytest.param("redis_masters", marks=pytest.mark.redlock, id="redlock"),
]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    server: Any = request.getfixturevalue(request.param)
    return str(server.url)


def unique(what: str) -> str:
    return f"cli-{what}-{uuid.uuid4().hex[:8]}"


async def lockkit_cli(*args: str, url: str | None = None, stdin: str = "") -> tuple[int, str]:
    """Run ``python -m lockkit ARGS`` (with ``LOCKKIT_URL`` set to ``url`` if given);
    exit code and stdout. stderr is checked to be a traceback-free line or nothing."""
    env = {k: v for k, v in os.environ.items() if k != "LOCKKIT_URL"}
    if url is not None:
        env["LOCKKIT_URL"] = url
    env["COLUMNS"] = "200"
    done = await anyio.run_process(
        [sys.executable, "-m", "lockkit", *args],
        input=stdin.encode(),
        check=False,
        env=env,
        cwd=ROOT,
    )
    err = done.stderr.decode()
    assert "Traceback" not in err, err
    return done.returncode, done.stdout.decode() + err


@pytest.fixture
def waiters() -> Iterator[list[subprocess.Popen[str]]]:
    """Waiter processes started by the test; their stdin is closed (they let go) and
    they are reaped at the end."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.stdin is not None:
            p.stdin.close()
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.stdout is not None:
            p.stdout.close()


def start_waiter(url: str, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.cli._waiter", url, name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


async def queued(locks: lockkit.LockClient, name: str, count: int) -> None:
    with anyio.fail_after(30):
        while (await locks.inspect(name)).waiters < count:  # noqa: ASYNC110 - polls a server
            await anyio.sleep(0.05)


async def test_inspect_shows_three_waiters_with_host_and_pid(
    url: str, waiters: list[subprocess.Popen[str]]
) -> None:
    async with lockkit.connect(url) as client:
        name = unique("queue")
        async with client.lock(name, ttl=30) as token:
            for i in range(3):  # one at a time, so the queue order is known
                waiters.append(start_waiter(url, name))
                await queued(client, name, i + 1)
            code, out = await lockkit_cli("inspect", name, "--json", url=url)  # LOCKKIT_URL
            assert code == 0, out
            info = json.loads(out)
            assert info["name"] == name and info["waiters"] == 3
            holder = info["holder"]
            assert holder["token"] == int(token) and holder["owner"] == token.owner
            assert holder["record"]["pid"] == os.getpid()
            assert holder["record"]["host"] == socket.gethostname()
            queue = info["queue"]
            assert [w["record"]["pid"] for w in queue] == [p.pid for p in waiters]
            assert {w["record"]["host"] for w in queue} == {socket.gethostname()}
            assert all(w["record"]["since"] >= holder["record"]["since"] for w in queue)

            code, out = await lockkit_cli("inspect", name, "--url", url)
            assert code == 0, out
            assert f"token     {int(token)}" in out and "waiting   3" in out
            lines = out.splitlines()
            rows = [next(i for i, line in enumerate(lines) if str(p.pid) in line) for p in waiters]
            assert rows == sorted(rows), out  # shown in queue order
        # the first waiter gets it next
        assert waiters[0].stdout is not None
        with anyio.fail_after(20):
            line = await anyio.to_thread.run_sync(waiters[0].stdout.readline)
        assert line.startswith("held ") and int(line.split()[1]) > int(token)


async def test_list_finds_held_names_under_a_prefix(url: str) -> None:
    async with lockkit.connect(url) as client:
        prefix = unique("list") + "/"
        async with client.lock(prefix + "a"), client.lock(prefix + "b"):
            async with client.lock(unique("other")):
                code, out = await lockkit_cli("list", prefix, "--json", "--url", url)
                assert code == 0, out
                found = json.loads(out)
                assert found["names"] == [prefix + "a", prefix + "b"]
                assert [lk["holder"]["record"]["pid"] for lk in found["locks"]] == [os.getpid()] * 2
                code, out = await lockkit_cli("list", prefix, url=url)
                assert code == 0 and prefix + "a" in out and prefix + "b" in out, out
        code, out = await lockkit_cli("list", prefix, "--url", url)
        assert code == 0 and "no locks held or queued under prefix" in out, out
        code, out = await lockkit_cli("list", prefix, "--json", "--url", url)
        assert json.loads(out)["names"] == []


async def test_release_force_breaks_the_lock(url: str) -> None:
    async with lockkit.connect(url) as client:
        name = unique("break")
        held, broken_token, got = anyio.Event(), 0, 0
        lost: list[BaseException] = []

        async def holder() -> None:
            nonlocal broken_token
            try:
                async with client.lock(name, ttl=3) as token:  # renewed every second or so
                    broken_token = int(token)
                    held.set()
                    await anyio.sleep(60)
            except lockkit.LockLostError as exc:
                lost.append(exc)

        async def waiter() -> None:
            nonlocal got
            async with lockkit.connect(url) as other:
                async with other.lock(name, ttl=30, timeout=30) as token:
                    got = int(token)

        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            await held.wait()
            tg.start_soon(waiter)
            await queued(client, name, 1)
            # asked, and answered no: nothing happens
            code, out = await lockkit_cli("release", "--force", name, url=url, stdin="n\n")
            assert code != 0 and "not broken" in out, out
            assert (await client.inspect(name)).holder is not None and not lost
            code, out = await lockkit_cli("release", "--force", "--yes", "--json", name, url=url)
            assert code == 0, out
            assert json.loads(out)["broken"] == broken_token
            with anyio.fail_after(20):
                while not (lost and got):  # noqa: ASYNC110 - two tasks
                    await anyio.sleep(0.05)
        assert isinstance(lost[0], lockkit.LockLostError)
        assert got > broken_token
        code, out = await lockkit_cli("release", "--force", "--yes", name, url=url)
        assert code == 0 and "is not held: nothing to break" in out, out


async def test_watch_follows_changes(url: str) -> None:
    async with lockkit.connect(url) as client:
        name = unique("watch")

        async def changes() -> None:
            await anyio.sleep(1.5)
            async with client.lock(name):
                await anyio.sleep(1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(changes)
            code, out = await lockkit_cli(
                "watch", name, "--json", "--interval", "0.1", "--duration", "4", url=url
            )
        assert code == 0, out
        states = [json.loads(line) for line in out.splitlines()]
        held = [s["holder"] is not None for s in states]
        assert held == [False, True, False], out
        assert states[1]["holder"]["record"]["pid"] == os.getpid()


def test_watch_ends_cleanly_on_ctrl_c(url: str) -> None:
    env = {**os.environ, "LOCKKIT_URL": url}
    watch = subprocess.Popen(
        [sys.executable, "-m", "lockkit", "watch", unique("ctrl-c"), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert watch.stdout is not None
    first = json.loads(watch.stdout.readline())  # it is following
    assert first["holder"] is None and first["queue"] == []
    watch.send_signal(signal.SIGINT)
    out, err = watch.communicate(timeout=20)
    assert watch.returncode == 0 and out == "" and err == "", err
