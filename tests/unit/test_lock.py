"""The lock object on the memory backend."""

from __future__ import annotations

import anyio
import pytest

import lockkit
from lockkit import LockNotOwnedError, LockTimeout
from lockkit.testing import VirtualClock


async def test_acquire_release_and_inspect() -> None:
    async with lockkit.connect() as locks:
        lock = locks.lock("a", ttl=5)
        assert not await lock.locked()
        token = await lock.acquire()
        assert await lock.locked() and lock.owned() and lock.token == token
        assert lock.statistics().held == 1
        info = await lock.inspect()
        assert info.holder is not None and info.holder.token == token
        await lock.extend(10)
        assert lock.lease is not None and lock.lease.remaining() > 9
        await lock.release()
        assert not await lock.locked() and lock.token is None


async def test_not_reentrant_in_one_task() -> None:
    async with lockkit.connect() as locks:
        lock = locks.lock("a")
        async with lock:
            with pytest.raises(RuntimeError, match="reentrant"):
                await lock.acquire()


async def test_shared_lock_object_excludes_tasks() -> None:
    async with lockkit.connect() as locks:
        lock = locks.lock("shared", ttl=5)
        inside = 0
        peak = 0

        async def worker() -> None:
            nonlocal inside, peak
            async with lock:
                inside += 1
                peak = max(peak, inside)
                await anyio.sleep(0.001)
                inside -= 1

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(worker)
        assert peak == 1


async def test_release_by_token_from_another_task() -> None:
    async with lockkit.connect() as locks:
        lock = locks.lock("a")
        tokens = []

        async def take() -> None:
            tokens.append(await lock.acquire())

        async with anyio.create_task_group() as tg:
            tg.start_soon(take)
        await lock.release(tokens[0])
        with pytest.raises(LockNotOwnedError):
            await lock.release(tokens[0])


async def test_client_close_releases_held_locks() -> None:
    async with lockkit.connect("memory://close-test") as other:
        async with lockkit.connect("memory://close-test") as locks:
            await locks.lock("a", ttl=60).acquire()
        assert (await other.inspect("a")).idle


async def test_client_use_outside_context_is_a_clear_error() -> None:
    client = lockkit.connect()
    with pytest.raises(RuntimeError, match="inside 'async with"):
        await client.lock("a").acquire()


async def test_named_stores_are_shared_private_ones_are_not() -> None:
    async with lockkit.connect("memory://s1") as a, lockkit.connect("memory://s1") as b:
        async with a.lock("x"):
            with pytest.raises(LockTimeout):
                await b.lock("x", timeout=0).acquire()
    async with lockkit.connect() as a, lockkit.connect() as b:
        async with a.lock("x"):
            async with b.lock("x", timeout=0):
                pass


async def test_lock_timeout_is_timeouterror() -> None:
    async with lockkit.connect() as locks:
        async with locks.lock("x"):

            async def other_task() -> None:
                with pytest.raises(TimeoutError):
                    await locks.lock("x", timeout=0.01).acquire()

            async with anyio.create_task_group() as tg:
                tg.start_soon(other_task)


async def test_bad_on_lost() -> None:
    async with lockkit.connect() as locks:
        with pytest.raises(lockkit.ConfigurationError, match="on_lost"):
            locks.lock("x", on_lost="ignore")  # type: ignore[arg-type]


async def test_release_inside_the_body_is_fine() -> None:
    async with lockkit.connect() as locks:
        lock = locks.lock("x", ttl=5)
        async with lock:
            await lock.release()
            assert not await lock.locked()
        async with lock:  # the cancel scope was closed properly: usable again
            assert lock.owned()
        with anyio.move_on_after(0.05):
            async with lock:
                await anyio.sleep(1)  # cancelled from outside: still clean
        assert not await lock.locked()


async def test_loss_found_by_extend_inside_the_body_is_reported() -> None:
    from lockkit.testing import VirtualClock, pause_renewals

    clock = VirtualClock()
    async with lockkit.connect("memory://", clock=clock) as locks:
        lock = locks.lock("x", ttl=10, on_lost="raise")
        with pytest.raises(LockNotOwnedError), pause_renewals(locks):
            async with lock:
                await clock.advance(11)
                await lock.extend()
        with pytest.raises(lockkit.LockLostError), pause_renewals(locks):
            async with lock:
                await clock.advance(11)
        assert not await lock.locked()


async def test_a_lock_taken_after_an_expiry_is_seen_held() -> None:
    clock = VirtualClock()
    async with lockkit.connect("memory://expiry-then-take", clock=clock) as locks:
        first = await locks.lock("x", ttl=1, renew=False).acquire()
        await clock.advance(2)  # the first lease ran out; nobody waits
        lock = locks.lock("x", ttl=30)
        second = await lock.acquire()
        info = await locks.inspect("x")
        assert info.holder is not None and info.holder.owner == second.owner
        assert int(second) > int(first)
        await lock.release()  # the server names it: no LockNotOwnedError


async def test_two_tasks_holding_through_one_object_are_kept_apart() -> None:
    """A task's lease ran out unnoticed by it and another task took the lock through
    the same object: both acquisitions stay on the books, each found by its task or
    token, and a caller holding neither must say which with ``token=``."""
    async with lockkit.connect() as locks:
        lock = locks.lock("two", ttl=0.2, renew=False)
        tokens: list[lockkit.FencingToken] = []
        took = anyio.Event()

        async def take() -> None:
            tokens.append(await lock.acquire(timeout=2))
            took.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(take)
            await took.wait()
            took = anyio.Event()
            tg.start_soon(take)  # served once the first lease has run out
        assert len(tokens) == 2 and tokens[1] > tokens[0]
        assert lock.statistics().held == 2
        with pytest.raises(LockNotOwnedError, match="pass token="):
            await lock.release()
        with pytest.raises(LockNotOwnedError):
            await lock.release(tokens[0])  # its lease ran out: the server moved on
        await lock.release(tokens[1])
        assert lock.statistics().held == 0
        with pytest.raises(LockNotOwnedError):
            await lock.release(tokens[1])
