"""Type-checked only (mypy --strict runs over tests/): the public API's types as users see them."""

from __future__ import annotations

from typing import assert_type

import lockkit
from lockkit.abc import BackendStatistics, Fence, LockInfo
from lockkit.backends.memory import MemoryBackend
from lockkit.guards.memory import MemoryGuard
from lockkit.testing import VirtualClock


async def usage() -> None:
    async with lockkit.connect("memory://", clock=VirtualClock()) as locks:
        assert_type(locks, lockkit.LockClient)
        lock = locks.lock("orders:42", ttl=30, timeout=5)
        assert_type(lock, lockkit.Lock)
        async with lock as token:
            assert_type(token, lockkit.FencingToken)
            assert_type(int(token), int)
            guard: MemoryGuard[dict[str, int]] = MemoryGuard()
            await guard.write("orders:42", {"qty": 1}, token=token)
            assert_type(await guard.read("orders:42"), dict[str, int] | None)
            assert_type(await guard.fence("orders:42"), Fence | None)
        assert_type(await lock.acquire(timeout=0), lockkit.FencingToken)
        assert_type(await lock.locked(), bool)
        assert_type(await lock.inspect(), LockInfo)
        assert_type(lock.lease, lockkit.Lease | None)
        assert_type(lock.statistics(), lockkit.LockStatistics)
        await lock.extend(10)
        await lock.release()
        assert_type(await locks.ping(), float)
        stats = locks.statistics()
        assert_type(stats, lockkit.ClientStatistics)
        assert_type(stats.backend, BackendStatistics)
        assert_type(stats.backend.requests["acquire"], int)
    client = lockkit.LockClient(MemoryBackend())
    assert_type(client.backend.kind, str)
    try:
        pass
    except lockkit.LockTimeout as exc:
        assert_type(exc.timeout, float)
    except lockkit.LockUsageError as exc:
        runtime: RuntimeError = exc  # also a RuntimeError, and a LockError
        assert_type(runtime, RuntimeError)
    except lockkit.StaleTokenError as exc:
        assert_type(exc.offered, int)
        assert_type(exc.current, int | None)
