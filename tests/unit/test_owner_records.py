"""Owner records, the queue in :class:`LockInfo`, ``list_names`` and ``force_release``
on the memory backend (the reference the server backends follow)."""

from __future__ import annotations

import os
import socket
import time

import anyio
import anyio.lowlevel
import pytest

import lockkit
from lockkit.abc import Capability, LockInfo, OwnerRecord
from lockkit.backends.memory import MemoryBackend


def test_record_round_trip_is_compact() -> None:
    record = OwnerRecord("h" * 300, 123, "t" * 300, 1700000000.25, "0.1.0")
    data = record.encode()
    assert len(data) <= 200
    back = OwnerRecord.decode(data)
    assert back == OwnerRecord("h" * 64, 123, "t" * 64, 1700000000.25, "0.1.0")
    for junk in (None, b"", b"owner-id", b"[1]", b'{"h":1,"p":2,"a":3}', b"\xff"):
        assert OwnerRecord.decode(junk) is None


def test_lock_info_stays_compatible() -> None:
    info = LockInfo("x", None, 0)
    assert info.queue == () and info.idle


async def test_holder_and_waiters_carry_their_records() -> None:
    async with lockkit.connect("memory://") as locks:
        before = time.time()
        async with locks.lock("x") as token:

            async def wait() -> None:
                async with locks.lock("x"):
                    pass

            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(wait, name=f"waiter-{i}")
                    while (await locks.inspect("x")).waiters < i + 1:
                        await anyio.lowlevel.checkpoint()
                info = await locks.inspect("x")
                tg.cancel_scope.cancel()
        assert info.holder is not None and info.holder.token == int(token)
        record = info.holder.record
        assert record is not None
        assert (record.host, record.pid) == (socket.gethostname(), os.getpid())
        assert before - 1 <= record.since <= time.time()
        assert record.version == lockkit.__version__
        tasks = [w.record.task for w in info.queue if w.record]
        assert tasks == ["waiter-0", "waiter-1", "waiter-2"]
        assert [w.sequence for w in info.queue] == [0, 1, 2]


async def test_list_names_and_force_release() -> None:
    backend = MemoryBackend()
    assert {Capability.LIST, Capability.FORCE_RELEASE} <= backend.capabilities
    async with lockkit.LockClient(backend) as locks:
        assert await backend.list_names() == []
        with pytest.raises(lockkit.LockLostError):
            async with locks.lock("jobs/a", ttl=0.3) as token, locks.lock("jobs/b"):
                async with locks.lock("other"):
                    assert await backend.list_names("jobs/") == ["jobs/a", "jobs/b"]
                    assert await backend.list_names() == ["jobs/a", "jobs/b", "other"]
                assert await backend.force_release("jobs/a") == int(token)
                assert await backend.force_release("jobs/a") is None
                assert await backend.list_names("jobs/") == ["jobs/b"]
                await anyio.sleep(5)  # the next renewal finds the lock gone
        assert await backend.force_release("nothing") is None
