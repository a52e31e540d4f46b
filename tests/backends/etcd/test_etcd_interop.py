"""``etcdctl lock`` (Go's concurrency.Mutex) and lockkit exclude each other, both ways."""

from __future__ import annotations

import signal
import time
import uuid

import anyio
import pytest
from anyio.abc import Process

import lockkit
from tests.servers._base import require_binary

pytestmark = pytest.mark.etcd


async def _etcdctl_lock(endpoints: list[str], name: str) -> Process:
    return await anyio.open_process(
        [require_binary("etcdctl"), f"--endpoints={','.join(endpoints)}", "lock", name],
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )


async def _line(process: Process, timeout: float) -> str:
    assert process.stdout is not None
    data = b""
    with anyio.fail_after(timeout):
        while not data.endswith(b"\n"):
            data += await process.stdout.receive(1)
    return data.decode().strip()


async def _stop(process: Process) -> None:
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            process.send_signal(signal.SIGINT)  # etcdctl revokes its session's lease
            with anyio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
        await process.aclose()


async def test_etcdctl_holds_and_lockkit_waits(etcd_server) -> None:
    """While ``etcdctl lock lockkit/NAME`` holds, lockkit cannot take NAME; a lockkit
    waiter queues behind it and gets the lock (with a higher token) once it lets go."""
    name = f"interop-{uuid.uuid4().hex[:8]}"
    process = await _etcdctl_lock(etcd_server.endpoints, f"lockkit/{name}")
    try:
        key = await _line(process, 15)
        assert key.startswith(f"lockkit/{name}/")
        async with lockkit.connect(etcd_server.url) as locks:
            with pytest.raises(lockkit.LockTimeout):
                await locks.lock(name, timeout=0).acquire()
            info = await locks.inspect(name)
            assert info.holder is not None and info.holder.owner == key.rpartition("/")[2]
            got: list[lockkit.FencingToken] = []

            async def wait() -> None:
                async with locks.lock(name, ttl=10, timeout=20) as token:
                    got.append(token)

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                with anyio.fail_after(5):
                    while (await locks.inspect(name)).waiters < 1:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                await anyio.sleep(0.5)
                assert not got, "lockkit took a lock etcdctl holds"
                released = time.monotonic()
                await _stop(process)
            assert got and int(got[0]) > info.holder.token
            assert time.monotonic() - released < 5
    finally:
        await _stop(process)


async def test_lockkit_holds_and_etcdctl_waits(etcd_server) -> None:
    """While lockkit holds NAME, ``etcdctl lock lockkit/NAME`` waits (queued behind it);
    it gets the lock as soon as lockkit releases."""
    name = f"interop-{uuid.uuid4().hex[:8]}"
    async with lockkit.connect(etcd_server.url) as locks:
        lock = locks.lock(name, ttl=10)
        token = await lock.acquire()
        process = await _etcdctl_lock(etcd_server.endpoints, f"lockkit/{name}")
        try:
            with anyio.fail_after(10):
                while (await locks.inspect(name)).waiters < 1:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            with anyio.move_on_after(1.0) as waited:
                await _line(process, 5)
            assert waited.cancelled_caught, "etcdctl took a lock lockkit holds"
            info = await locks.inspect(name)
            assert info.holder is not None and info.holder.owner == token.owner
            await lock.release()
            key = await _line(process, 5)
            assert key.startswith(f"lockkit/{name}/")
            info = await locks.inspect(name)
            assert info.holder is not None and info.holder.token > int(token)
            with pytest.raises(lockkit.LockTimeout):
                await locks.lock(name, timeout=0).acquire()
        finally:
            await _stop(process)
        with anyio.fail_after(5):
            while not (await locks.inspect(name)).idle:  # noqa: ASYNC110
                await anyio.sleep(0.05)
