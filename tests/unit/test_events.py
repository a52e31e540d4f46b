"""The instrumentation seam: what listeners hear, structured log fields, and silence
when nothing listens."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import anyio
import pytest

import lockkit
from lockkit import LockLostError, LockTimeout
from lockkit._core import _events
from lockkit._core._events import Listener, Probe, RenewProbe
from lockkit.testing import VirtualClock, pause_renewals


class Recorder(Listener):
    """Keeps every report as (method, snapshot of what matters)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, object]]] = []

    def _note(self, method: str, probe: Probe) -> None:
        self.seen.append(
            (
                method,
                {
                    "name": probe.name,
                    "outcome": probe.outcome,
                    "token": None if probe.token is None else int(probe.token),
                    "wait": probe.wait,
                    "queued": probe.queued,
                    "position": probe.position,
                    "release": probe.release_outcome,
                    "lost": probe.lost_reason,
                },
            )
        )

    def acquire_started(self, probe: Probe) -> None:
        self._note("acquire_started", probe)

    def queued(self, probe: Probe) -> None:
        self._note("queued", probe)

    def acquire_ended(self, probe: Probe) -> None:
        self._note("acquire_ended", probe)

    def hold_started(self, probe: Probe) -> None:
        self._note("hold_started", probe)

    def release_started(self, probe: Probe) -> None:
        self._note("release_started", probe)

    def release_ended(self, probe: Probe) -> None:
        self._note("release_ended", probe)

    def hold_ended(self, probe: Probe) -> None:
        self._note("hold_ended", probe)

    def renew_started(self, probe: RenewProbe) -> None:
        self.seen.append(("renew_started", {"batch": len(probe.leases)}))

    def renew_ended(self, probe: RenewProbe) -> None:
        self.seen.append(("renew_ended", {"outcomes": list(probe.outcomes)}))

    def methods(self) -> list[str]:
        return [method for method, _ in self.seen]

    def last(self, method: str) -> dict[str, object]:
        return [facts for m, facts in self.seen if m == method][-1]


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture(autouse=True)
def quiet_lockkit_logger() -> Iterator[None]:
    """These tests decide the log level themselves (DEBUG attaches the log listener)."""
    lockkit_logger = logging.getLogger("lockkit")
    level = lockkit_logger.level
    lockkit_logger.setLevel(logging.INFO)
    yield
    lockkit_logger.setLevel(level)


async def test_nothing_listens_by_default() -> None:
    async with lockkit.connect("memory://") as locks:
        assert locks.session.events is None
        lock = locks.lock("job")
        await lock.acquire()
        assert lock.lease is not None and lock.lease.probe is None
        assert locks.session.watchdog is not None and locks.session.watchdog.events is None
        await lock.release()


async def test_acquire_hold_release_in_order(clock: VirtualClock) -> None:
    recorder = Recorder()
    async with lockkit.connect("memory://", clock=clock) as locks:
        locks.session.listen(recorder)
        async with locks.lock("job", ttl=30) as token:
            await clock.advance(2)
        assert recorder.methods() == [
            "acquire_started",
            "acquire_ended",
            "hold_started",
            "release_started",
            "release_ended",
            "hold_ended",
        ]
        ended = recorder.last("acquire_ended")
        assert ended["outcome"] == "acquired" and ended["token"] == int(token)
        assert ended["wait"] == 0 and ended["queued"] is False
        assert recorder.last("release_ended")["release"] == "released"
        assert recorder.last("hold_ended")["lost"] is None


async def test_a_queued_wait_reports_its_position_and_time(clock: VirtualClock) -> None:
    recorder = Recorder()
    async with lockkit.connect("memory://", clock=clock) as locks:
        first = locks.lock("job", ttl=30)
        await first.acquire()
        locks.session.listen(recorder)

        async def second() -> None:
            async with locks.lock("job", ttl=30):
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            await clock.advance(3)
            assert recorder.last("queued")["position"] == 1
            await first.release()
        ended = [facts for m, facts in recorder.seen if m == "acquire_ended"]
        assert ended[0]["queued"] is True and ended[0]["position"] == 1
        assert ended[0]["wait"] == 3


async def test_a_timeout_is_reported(clock: VirtualClock) -> None:
    recorder = Recorder()
    async with lockkit.connect("memory://", clock=clock) as locks:
        await locks.lock("job").acquire()
        locks.session.listen(recorder)

        async def waiter() -> None:
            with pytest.raises(LockTimeout):
                await locks.lock("job").acquire(timeout=5)

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await clock.advance(5)
        assert recorder.methods() == ["acquire_started", "queued", "acquire_ended"]
        assert recorder.last("acquire_ended")["outcome"] == "timeout"
        assert recorder.last("acquire_ended")["wait"] == 5


async def test_a_loss_ends_the_hold_with_its_reason(clock: VirtualClock) -> None:
    recorder = Recorder()
    async with lockkit.connect("memory://", clock=clock) as locks:
        locks.session.listen(recorder)

        async def holder() -> None:
            with pytest.raises(LockLostError):
                async with locks.lock("job", ttl=30):
                    await anyio.sleep_forever()

        with pause_renewals(locks):
            async with anyio.create_task_group() as tg:
                tg.start_soon(holder)
                await clock.advance(30)
        reason = recorder.last("hold_ended")["lost"]
        assert reason == _events.DEADLINE_PASSED
        assert _events.loss_kind(str(reason)) == "deadline"
        assert "release_started" not in recorder.methods()  # released in the background


async def test_loss_kinds_match_the_reasons_the_core_gives(clock: VirtualClock) -> None:
    recorder = Recorder()
    url = "memory://loss-kinds"
    async with lockkit.connect(url, clock=clock) as locks, lockkit.connect(url, clock=clock) as b:
        locks.session.listen(recorder)
        lock = locks.lock("job", ttl=10, renew=False)
        await lock.acquire()
        await clock.advance(11)
        assert _events.loss_kind(str(recorder.last("hold_ended")["lost"])) == "deadline"
        # taken over on the server, found out at release
        lock = locks.lock("other", ttl=10, renew=False)
        await lock.acquire()
        lease = lock.lease
        assert lease is not None
        lease.safe_deadline += 100  # the client believes it holds on
        await clock.advance(11)
        await b.lock("other").acquire()
        with pytest.raises(lockkit.LockNotOwnedError):
            await lock.release()
        assert recorder.last("release_ended")["release"] == "not_owner"
        assert _events.loss_kind(str(recorder.last("hold_ended")["lost"])) == "not_owner"

    closing = Recorder()

    async def body(locks: lockkit.LockClient) -> None:
        with pytest.raises(LockLostError):
            async with locks.lock("job"):
                await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        async with lockkit.connect("memory://") as locks:
            locks.session.listen(closing)
            tg.start_soon(body, locks)
            await anyio.sleep(0.01)
    assert _events.loss_kind(str(closing.last("hold_ended")["lost"])) == "closed"
    assert _events.loss_kind("the ZooKeeper session expired") == "backend"


async def test_renewals_are_reported_per_batch(clock: VirtualClock) -> None:
    recorder = Recorder()
    async with lockkit.connect("memory://", clock=clock) as locks:
        locks.session.listen(recorder)
        await locks.lock("a", ttl=30).acquire()
        await locks.lock("b", ttl=30).acquire()
        await clock.advance(10)
        assert recorder.last("renew_started") == {"batch": 2}
        assert recorder.last("renew_ended") == {"outcomes": ["renewed", "renewed"]}


async def test_a_failing_listener_never_breaks_a_lock(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Listener):
        def acquire_ended(self, probe: Probe) -> None:
            raise RuntimeError("boom")

        def hold_ended(self, probe: Probe) -> None:
            raise RuntimeError("boom")

    async with lockkit.connect("memory://") as locks:
        locks.session.listen(Broken())
        with caplog.at_level(logging.ERROR, "lockkit"):
            async with locks.lock("job"):
                pass
        assert [r.getMessage().split(" failed")[0] for r in caplog.records] == [
            "lockkit listener " + repr(locks.session.events)
        ] * 2
        assert (await locks.inspect("job")).idle


async def test_process_wide_listeners_reach_open_clients() -> None:
    recorder = Recorder()
    async with lockkit.connect("memory://") as locks:
        _events.add_global(recorder)
        try:
            async with locks.lock("job"):
                pass
            async with lockkit.connect("memory://") as later:
                assert later.session.listeners == (recorder,)
        finally:
            _events.remove_global(recorder)
        assert locks.session.events is None
        assert recorder.methods().count("hold_ended") == 1


async def test_debug_records_carry_fields(
    caplog: pytest.LogCaptureFixture, clock: VirtualClock
) -> None:
    with caplog.at_level(logging.DEBUG, "lockkit"):
        async with lockkit.connect("memory://", clock=clock) as locks:
            assert locks.session.events is not None  # the log listener
            async with locks.lock("orders:1", ttl=30) as token:
                await clock.advance(10)  # one renewal
    by_message = {r.getMessage().split(" (")[0]: r for r in caplog.records}
    acquired = by_message["lock 'orders:1' acquired"]
    assert acquired.levelno == logging.DEBUG
    assert acquired.__dict__["lock"] == "orders:1"
    assert acquired.__dict__["token"] == int(token)
    assert acquired.__dict__["owner"] == token.owner[:12]
    assert acquired.__dict__["backend"] == "memory"
    assert acquired.__dict__["wait_s"] == 0
    released = by_message["lock 'orders:1' release"]
    assert released.__dict__["outcome"] == "released"
    assert released.__dict__["hold_s"] == 10
    renewed = next(r for r in caplog.records if r.getMessage().startswith("renewed 1 of 1"))
    assert renewed.__dict__["batch"] == 1 and renewed.__dict__["renewed"] == 1
    for record in caplog.records:  # never the whole owner id, which acts as the holder
        assert token.owner not in str(record.__dict__)


async def test_the_loss_warning_carries_fields(
    caplog: pytest.LogCaptureFixture, clock: VirtualClock
) -> None:
    async with lockkit.connect("memory://", clock=clock) as locks:
        lock = locks.lock("job", ttl=10, renew=False)
        token = await lock.acquire()
        with caplog.at_level(logging.WARNING, "lockkit"):
            await clock.advance(10)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert {k: record.__dict__[k] for k in ("lock", "token", "owner", "backend", "reason")} == {
        "lock": "job",
        "token": int(token),
        "owner": token.owner[:12],
        "backend": "memory",
        "reason": _events.DEADLINE_PASSED,
    }
