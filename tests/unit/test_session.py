"""The session and the holding machinery: misuse, local books, loss and close."""

from __future__ import annotations

import gc
import inspect
import time

import anyio
import pytest

import lockkit
from lockkit import LeaseState, LockClient, LockLostError, LockTimeout, LockUsageError
from lockkit.backends.memory import MemoryBackend
from lockkit.testing import FaultyBackend, VirtualClock, pause_renewals


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
        async with lock:  # the release fails: logged, retried in the background
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


async def test_a_failed_release_does_not_mask_the_body_error() -> None:
    backend, locks = faulty("release-fails-body-raises")
    async with locks:
        backend.fail("release", times=1)
        with pytest.raises(ValueError, match="the body's own error"):
            async with locks.lock("x", ttl=30):
                raise ValueError("the body's own error")


# -- the watchdog follows changes made outside it ---------------------------------------


async def test_extend_to_a_shorter_ttl_keeps_the_lease_renewed() -> None:
    clock = VirtualClock()
    async with lockkit.connect("memory://", clock=clock) as locks:
        lock = locks.lock("x", ttl=30)
        await lock.acquire()
        await clock.advance(1)
        await lock.extend(3)  # renew at 2 s from now, not at the old 10 s
        for _ in range(20):
            await clock.advance(0.5)
        assert lock.lease is not None and lock.lease.state is LeaseState.HELD
        info = await lock.inspect()
        assert info.holder is not None and info.holder.owner == lock.token.owner  # type: ignore[union-attr]


async def test_renewals_resume_as_soon_as_a_pause_ends() -> None:
    clock = VirtualClock()
    async with lockkit.connect("memory://", clock=clock) as locks:
        lock = locks.lock("x", ttl=3)
        await lock.acquire()
        with pause_renewals(locks):
            await clock.advance(1.2)  # a renewal fell due while paused; 1.77 s remain
        for _ in range(20):
            await clock.advance(0.2)
        assert lock.lease is not None and lock.lease.state is LeaseState.HELD


# -- occupancy follows the owner ----------------------------------------------------------


async def test_releasing_a_lost_hold_keeps_the_newer_one_of_the_same_task() -> None:
    clock = VirtualClock()
    async with lockkit.connect("memory://", clock=clock) as locks:
        a, b, c = (locks.lock("x", ttl=3) for _ in range(3))
        await a.acquire()
        with pause_renewals(locks):
            await clock.advance(4)  # a's lease is lost
        await b.acquire(timeout=0)  # the task holds x again, through b
        with pytest.raises(lockkit.LockNotOwnedError):
            await a.release()
        with anyio.fail_after(2), pytest.raises(LockUsageError):
            await c.acquire()  # still holds x through b: refused, not a wait on itself


# -- closing the client ---------------------------------------------------------------------


async def test_closing_tells_a_body_that_still_runs() -> None:
    clock = VirtualClock()
    outcome: list[str] = []

    async def worker(locks: LockClient, started: anyio.Event) -> None:
        try:
            async with locks.lock("x", ttl=30):
                started.set()
                await clock.sleep_until(clock.now() + 100)
                outcome.append("body finished")
        except LockLostError:
            outcome.append("lost")

    with anyio.fail_after(5):  # a body nobody told would sleep on forever
        async with anyio.create_task_group() as tg:
            async with lockkit.connect("memory://close-under-body", clock=clock) as locks:
                started = anyio.Event()
                tg.start_soon(worker, locks, started)
                await started.wait()
            await clock.advance(0)
    assert outcome == ["lost"]


async def test_a_wait_in_flight_ends_when_the_client_closes() -> None:
    clock = VirtualClock()
    async with lockkit.connect("memory://close-while-waiting", clock=clock) as holder:
        await holder.lock("x", ttl=5).acquire()
        errors: list[BaseException] = []

        async def waiter(locks: LockClient) -> None:
            try:
                await locks.lock("x", ttl=5).acquire()
            except LockUsageError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            async with lockkit.connect("memory://close-while-waiting", clock=clock) as w:
                tg.start_soon(waiter, w)
                await clock.advance(0)
                assert (await holder.inspect("x")).waiters == 1
        assert len(errors) == 1 and "closed while" in str(errors[0])
        assert (await holder.inspect("x")).waiters == 0


async def test_a_release_that_fails_on_close_is_tried_again() -> None:
    backend, locks = faulty("close-retry")
    async with locks:
        await locks.lock("x", ttl=60).acquire()
        backend.fail("release", times=1)
    assert backend.calls["release"] == 2
    async with lockkit.connect("memory://close-retry") as other:
        assert (await other.inspect("x")).idle


async def test_one_hanging_release_does_not_hold_up_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("lockkit._core._session.CLOSE_TIMEOUT", 0.5)
    monkeypatch.setattr("lockkit._core._session.Cleanup.aclose", _no_flush)
    backend, locks = faulty("close-hang")
    async with locks:
        await locks.lock("a").acquire()
        for name in "bcd":
            async with anyio.create_task_group() as tg:  # each from its own task
                tg.start_soon(locks.lock(name).acquire)
        backend_release = backend.inner.release

        async def release(name: str, owner: str) -> bool:
            if name == "a":
                await anyio.sleep_forever()
            return await backend_release(name, owner)

        monkeypatch.setattr(backend.inner, "release", release)
    async with lockkit.connect("memory://close-hang") as other:
        for name in "bcd":
            assert (await other.inspect(name)).idle, name


async def _no_flush(self: object, timeout: float) -> None:
    return None
