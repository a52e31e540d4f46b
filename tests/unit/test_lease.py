"""Lease, watchdog and loss on a virtual clock: no sleeps."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

import lockkit
from lockkit import BackendUnavailable, LeaseState, LockClient, LockLostError
from lockkit.abc import Backend, BackendContext, Claim, Grant, LockInfo, Renewal
from lockkit.backends.memory import MemoryBackend
from lockkit.testing import FaultyBackend, VirtualClock, pause_renewals


class FlakyBackend(Backend):
    """Memory backend whose renewals can be made to fail without an answer."""

    kind = "memory"
    capabilities = MemoryBackend.capabilities

    def __init__(self) -> None:
        self.inner = MemoryBackend()
        self.failing = False
        self.batches: list[int] = []

    @classmethod
    def from_url(cls, url, **options):  # pragma: no cover - built directly
        return cls()

    async def aopen(self, ctx: BackendContext) -> None:
        await super().aopen(ctx)
        await self.inner.aopen(ctx)

    async def acquire(self, claim: Claim, *, timeout: float | None) -> Grant:
        return await self.inner.acquire(claim, timeout=timeout)

    async def release(self, name, owner) -> bool:
        return await self.inner.release(name, owner)

    async def extend(self, name, owner, *, ttl) -> bool:
        if self.failing:
            raise BackendUnavailable("renewal failed")
        return await self.inner.extend(name, owner, ttl=ttl)

    async def extend_many(self, renewals: Sequence[Renewal]) -> list[bool | BaseException]:
        self.batches.append(len(renewals))
        return await super().extend_many(renewals)

    async def inspect(self, name) -> LockInfo:
        return await self.inner.inspect(name)


async def held(locks: LockClient, name: str = "job") -> tuple[lockkit.Lock, lockkit.Lease]:
    """A lock (ttl 30 s, loss raised at the end) acquired, and its lease."""
    lock = locks.lock(name, ttl=30, on_lost="raise")
    await lock.acquire()
    assert lock.lease is not None
    return lock, lock.lease


def state(lease: lockkit.Lease) -> LeaseState:
    return lease.state


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


async def test_watchdog_renews_past_ttl(clock: VirtualClock) -> None:
    async with lockkit.connect("memory://", clock=clock) as locks:
        async with locks.lock("job", ttl=30) as token:
            for _ in range(10):
                await clock.advance(10)
            lease = locks.lock("job").lease
            assert lease is None  # another Lock object holds nothing
            info = await locks.inspect("job")
            assert info.holder is not None and info.holder.owner == token.owner
            assert info.holder.expires_in is not None and 0 < info.holder.expires_in <= 30


async def test_paused_holder_is_cancelled_and_told(clock: VirtualClock) -> None:
    async with lockkit.connect("memory://", clock=clock) as locks:
        reached_end = False

        async def holder() -> None:
            nonlocal reached_end
            with pytest.raises(LockLostError) as info:
                async with locks.lock("job", ttl=30):
                    await anyio.sleep_forever()
            assert "safe deadline" in str(info.value)
            reached_end = True

        with pause_renewals(locks):
            async with anyio.create_task_group() as tg:
                tg.start_soon(holder)
                await clock.advance(29)
                assert not reached_end
                await clock.advance(1)
        assert reached_end
        assert (await locks.inspect("job")).idle


async def test_safe_deadline_accounts_for_drift(clock: VirtualClock) -> None:
    async with lockkit.connect("memory://", clock=clock, drift_factor=0.1) as locks:
        lock = locks.lock("job", ttl=10, renew=False)
        await lock.acquire()
        lease = lock.lease
        assert lease is not None
        assert lease.remaining() == pytest.approx(10 - 1 - 0.002)
        await clock.advance(9)
        assert state(lease) is LeaseState.LOST
        assert not lock.owned()


async def test_renewal_failures_put_lease_at_risk_then_lose_it(clock: VirtualClock) -> None:
    backend = FlakyBackend()
    async with LockClient(backend, clock=clock) as locks:
        lock, lease = await held(locks)
        backend.failing = True
        await clock.advance(11)
        assert state(lease) is LeaseState.AT_RISK
        backend.failing = False
        await clock.advance(4)
        assert state(lease) is LeaseState.HELD
        backend.failing = True
        await clock.advance(40)
        assert state(lease) is LeaseState.LOST
        with pytest.raises(lockkit.LockNotOwnedError):
            await lock.release()


async def test_renewals_are_batched(clock: VirtualClock) -> None:
    backend = FlakyBackend()
    async with LockClient(backend, clock=clock) as locks:
        for i in range(200):
            await locks.lock(f"job-{i}", ttl=30).acquire()
            await clock.advance(0.01)  # acquisitions spread over 2 s
        backend.batches.clear()
        for _ in range(9):
            await clock.advance(10)
        assert sum(backend.batches) >= 200 * 8
        assert len(backend.batches) <= 12, backend.batches


async def test_definite_loss_from_server(clock: VirtualClock) -> None:
    backend = FlakyBackend()
    async with LockClient(backend, clock=clock) as locks:
        lost: list[str] = []
        lock = locks.lock("job", ttl=30, on_lost="raise")
        token = await lock.acquire()
        assert lock.lease is not None
        lock.lease.on_lost(lambda lease: lost.append(lease.lost_reason or ""))
        # another party force-releases it on the server
        assert await backend.inner.release("job", token.owner)
        await clock.advance(10)
        assert lost and "no longer names" in lost[0]


async def test_on_lost_raise_lets_body_finish(clock: VirtualClock) -> None:
    async with lockkit.connect("memory://", clock=clock) as locks:
        finished = False

        async def holder() -> None:
            nonlocal finished
            with pytest.raises(LockLostError):
                async with locks.lock("job", ttl=30, on_lost="raise"):
                    await clock.sleep_until(100)
                    finished = True

        with pause_renewals(locks):
            async with anyio.create_task_group() as tg:
                tg.start_soon(holder)
                await clock.advance(100)
        assert finished


async def test_virtual_clock_expiry_hands_over(clock: VirtualClock) -> None:
    async with lockkit.connect("memory://", clock=clock) as locks:
        first = await locks.lock("job", ttl=30, renew=False).acquire()
        got: list[int] = []

        async def waiter() -> None:
            got.append(int(await locks.lock("job", ttl=30).acquire()))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await clock.advance(29.9)
            assert not got
            await clock.advance(0.2)
        assert got and got[0] > int(first)


async def test_a_renewal_counts_from_its_send_not_its_reply(clock: VirtualClock) -> None:
    backend = FaultyBackend(MemoryBackend())
    async with LockClient(backend, clock=clock) as locks:
        lock = locks.lock("slow-reply", ttl=30)
        await lock.acquire()
        lease = lock.lease
        assert lease is not None
        backend.delay_reply(4.0, "extend")  # the server renews at once; the reply is late
        await clock.advance(10)  # the renewal is sent at t=10 (ttl/3)
        await clock.advance(5)  # and confirmed at t=14
        assert lease.state is LeaseState.HELD
        assert lease.safe_deadline == pytest.approx(10 + 30 - lease.drift)
        await lock.release()


async def test_reconfirm_renews_every_lease_now(clock: VirtualClock) -> None:
    backend = FlakyBackend()
    async with LockClient(backend, clock=clock) as locks:
        _lock, lease = await held(locks)
        backend.batches.clear()
        backend.context.reconfirm(1.0)
        assert state(lease) is LeaseState.AT_RISK
        await clock.advance(0.01)
        assert backend.batches == [1]  # renewed at once, not at ttl/3
        assert state(lease) is LeaseState.HELD
        assert lease.remaining() > 29


async def test_reconfirm_loses_what_is_not_confirmed_in_time(clock: VirtualClock) -> None:
    backend = FlakyBackend()
    async with LockClient(backend, clock=clock) as locks:
        _lock, lease = await held(locks)
        backend.failing = True
        backend.context.reconfirm(1.0)
        await clock.advance(0.9)
        assert state(lease) is LeaseState.AT_RISK
        await clock.advance(0.2)
        assert state(lease) is LeaseState.LOST


async def test_reconfirm_names_the_loss_reason_it_was_given(clock: VirtualClock) -> None:
    backend = FlakyBackend()
    async with LockClient(backend, clock=clock) as locks:
        _first, lease = await held(locks)
        backend.failing = True
        backend.context.reconfirm(1.0, "the primary changed")
        await clock.advance(1.1)
        assert state(lease) is LeaseState.LOST
        assert lease.lost_reason == "the primary changed"
        backend.failing = False
        _second, other = await held(locks, "other")
        backend.failing = True
        backend.context.reconfirm(0.0)  # no reason given: the deadline's own
        await clock.advance(0.01)
        assert other.lost_reason == "the safe deadline passed without a confirmed renewal"


async def test_a_renewal_sent_before_reconfirm_confirms_nothing(clock: VirtualClock) -> None:
    backend = FaultyBackend(MemoryBackend())
    async with LockClient(backend, clock=clock) as locks:
        _lock, lease = await held(locks)
        backend.delay_reply(2.0, "extend")
        await clock.advance(10.5)  # a renewal is in flight (sent at t=10)
        backend.context.reconfirm(5.0)
        await clock.advance(2)  # its reply (from the old server) is not trusted
        assert state(lease) is LeaseState.AT_RISK
        await clock.advance(2.5)  # the renewal asked again after it confirms
        assert state(lease) is LeaseState.HELD
        assert lease.remaining() > 20
