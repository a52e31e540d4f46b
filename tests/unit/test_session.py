"""The session and the holding machinery: misuse, local books, loss and close."""

from __future__ import annotations

import gc
import inspect
import time

import anyio
import pytest

import lockkit
from lockkit import BackendUnavailable, LockClient, LockLostError, LockTimeout, LockUsageError
from lockkit.backends.memory import MemoryBackend
from lockkit.testing import FaultyBackend, pause_renewals


def faulty(store: str = "session-tests") -> tuple[FaultyBackend, LockClient]:
    backend = FaultyBackend(MemoryBackend(store))
    return backend, LockClient(backend)


# -- misuse is a LockError ---------------------------------------------------------------


async def test_misuse_is_a_lock_error_and_a_runtime_error() -> None:
    locks = lockkit.connect()
    with pytest.raises(LockUsageError, match="not open yet"):
        await locks.lock("x").acquire()
    async with locks:
        pass
    with pytest.raises(LockUsageError, match="closed"):
        await locks.lock("x").acquire()
    with pytest.raises(LockUsageError, match="only once"):
        await locks.__aenter__()
    assert issubclass(LockUsageError, lockkit.LockError)
    assert issubclass(LockUsageError, RuntimeError)


async def test_two_lock_objects_in_one_task_fail_at_once() -> None:
    async with lockkit.connect() as locks:
        async with locks.lock("x"):
            started = time.monotonic()
            with anyio.fail_after(2), pytest.raises(LockUsageError, match="already holds or waits"):
                await locks.lock("x").acquire()  # default timeout: forever
            assert time.monotonic() - started < 1
        async with locks.lock("x"):  # released: the name is free for this task again
            pass


async def test_reentering_one_lock_object_fails_at_once() -> None:
    async with lockkit.connect() as locks:
        lock = locks.lock("x")
        async with lock:
            with pytest.raises(LockUsageError, match="not reentrant"):
                await lock.acquire(timeout=0)


async def test_acquisitions_are_keyed_by_the_task_object() -> None:
    async with lockkit.connect() as locks:
        lock = locks.lock("x", ttl=30)

        async def hold_and_end() -> None:
            await lock.acquire()

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold_and_end)
        gc.collect()
        errors: list[BaseException] = []

        async def try_once() -> None:
            try:
                await lock.acquire(timeout=0)
            except LockTimeout:
                pass
            except LockUsageError as exc:  # a reused id(task) would land here
                errors.append(exc)

        for _ in range(50):
            async with anyio.create_task_group() as tg:
                tg.start_soon(try_once)
        assert errors == []
        assert lock.statistics().held == 1
        await lock.release()  # the one acquisition, from another task: unambiguous


def test_signatures_show_no_sentinel_object() -> None:
    shown = str(inspect.signature(lockkit.Lock.acquire))
    assert "object at 0x" not in shown and "the lock's timeout" in shown


# -- the local books stay straight ----------------------------------------------------------


async def test_a_task_cancelled_inside_release_holds_nothing() -> None:
    backend, locks = faulty("cancel-in-release")
    async with locks, lockkit.connect("memory://cancel-in-release") as other:
        lock = locks.lock("x", ttl=30)
        await lock.acquire()
        backend.delay(0.2, "release")
        with anyio.move_on_after(0.05):
            await lock.release()
        assert lock.statistics().held == 0 and locks.held_count == 0
        backend.heal()
        with anyio.fail_after(3):
            async with lock:  # the same task may take it again
                pass
        assert (await other.inspect("x")).idle


async def test_async_with_leaves_nothing_held_when_release_fails() -> None:
    backend, locks = faulty("release-fails")
    async with locks, lockkit.connect("memory://release-fails") as other:
        lock = locks.lock("x", ttl=30)
        backend.fail("release", times=1)
        with pytest.raises(BackendUnavailable):
            async with lock:
                pass
        assert lock.statistics().held == 0 and locks.held_count == 0
        with anyio.fail_after(3):
            while not (await other.inspect("x")).idle:  # noqa: ASYNC110 - retried release
                await anyio.sleep(0.05)
        async with lock:  # no "already holds"
            pass
        assert locks.statistics().backend.cleanups_pending == 0


async def test_loss_reaches_the_caller_when_the_body_is_cancelled() -> None:
    backend, locks = faulty("loss-fast")
    async with locks:
        backend.hang("release")  # a release after the loss would never return
        started = time.monotonic()
        with anyio.fail_after(5), pytest.raises(LockLostError), pause_renewals(locks):
            async with locks.lock("x", ttl=0.5):
                await anyio.sleep(30)
        elapsed = time.monotonic() - started
        assert elapsed < 1.0, f"loss reported {elapsed:.2f}s after the start of a 0.5s lease"
        assert locks.held_count == 0
        backend.heal()


async def test_close_releases_even_when_cancelled() -> None:
    backend, locks = faulty("close-shielded")
    async with lockkit.connect("memory://close-shielded") as other:
        with anyio.move_on_after(0.1):
            async with locks:
                await locks.lock("x", ttl=30).acquire()
                backend.delay(0.05, "release")  # the release awaits while cancelled
                await anyio.sleep(10)
        assert backend.calls["release"] == 1
        assert (await other.inspect("x")).idle


async def test_ping_returns_a_latency() -> None:
    async with lockkit.connect() as locks:
        assert 0 <= await locks.ping() < 1


async def test_statistics_count_holds() -> None:
    async with lockkit.connect() as locks:
        async with locks.lock("a"), locks.lock("b"):
            stats = locks.statistics()
            assert stats.held == 2 and stats.backend.waiting == 0
        assert locks.statistics().held == 0
