"""The shared waiting machinery on a virtual clock: room, wait loop, cleanup."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import anyio
import pytest

from lockkit import BackendUnavailable, LockTimeout, LockUsageError
from lockkit._core._backend import Grant
from lockkit._core._waiting import EARLY_LIMIT, Cleanup, Listening, Seat, Turn, WaitRoom, wait_turn
from lockkit.testing import VirtualClock


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


# -- the waiting room ----------------------------------------------------------------


def test_room_routes_a_wake_up_to_its_owner_only() -> None:
    room = WaitRoom()
    a, b = room.sit("n", "a"), room.sit("n", "b")
    room.wake("b")
    assert not a.event.is_set() and b.event.is_set()
    assert room.wakeups == 1


def test_room_keeps_a_wake_up_that_came_before_its_waiter() -> None:
    room = WaitRoom()
    room.wake("late")
    assert room.sit("n", "late").event.is_set()
    assert not room.sit("n", "other").event.is_set()


def test_room_keeps_the_token_a_wake_up_carried() -> None:
    room = WaitRoom()
    room.wake("early", 7)
    seat = room.sit("n", "early")
    assert seat.event.is_set() and seat.token == 7
    other = room.sit("n", "other")
    room.wake("other", 9)
    tokens = [other.token]
    room.rearm(other)  # asking again: the answer decides, not the old token
    tokens.append(other.token)
    assert tokens == [9, None] and not other.event.is_set()


def test_room_bounds_early_wake_ups() -> None:
    room = WaitRoom()
    for i in range(EARLY_LIMIT + 10):
        room.wake(f"o{i}")
    assert not room.sit("n", "o0").event.is_set()  # the oldest were dropped
    assert room.sit("n", f"o{EARLY_LIMIT + 9}").event.is_set()


def test_room_hooks_run_once_per_name() -> None:
    events: list[tuple[str, str]] = []
    room = WaitRoom(
        on_first=lambda n: events.append(("first", n)),
        on_last=lambda n: events.append(("last", n)),
    )
    seats = [room.sit("x", f"o{i}") for i in range(3)]
    other = room.sit("y", "p")
    assert room.waiting("x") == 3 and room.waiting() == 4 and sorted(room.names()) == ["x", "y"]
    assert [room.leave(s) for s in seats] == [False, False, True]
    assert room.leave(seats[0]) is False  # leaving twice is harmless
    room.leave(other)
    assert events == [("first", "x"), ("first", "y"), ("last", "x"), ("last", "y")]
    assert room.waiting() == 0


def test_room_wakes_a_name_or_everyone() -> None:
    room = WaitRoom()
    x1, x2, y = room.sit("x", "1"), room.sit("x", "2"), room.sit("y", "3")
    room.wake_name("x")
    assert x1.event.is_set() and x2.event.is_set() and not y.event.is_set()
    room.wake_all()
    assert y.event.is_set()


# -- the wait loop -------------------------------------------------------------------


class Script:
    """A fake backend: answers tries from a list, records leaves."""

    def __init__(self, clock: VirtualClock, answers: list[Turn | Exception]) -> None:
        self.clock = clock
        self.answers = answers
        self.asked: list[tuple[float, bool]] = []
        self.left = 0

    async def try_once(self, queue: bool) -> Turn:
        self.asked.append((self.clock.now(), queue))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def leave(self) -> None:
        self.left += 1


def _turn(
    script: Script,
    room: WaitRoom,
    cleanup: Cleanup,
    timeout: float | None,
    listen: Callable[[Seat], object] | None = None,
    fresh_for: float = 0.0,
) -> Callable[[], object]:
    async def run() -> Grant:
        return await wait_turn(
            script.try_once,
            name="n",
            owner="me",
            room=room,
            clock=script.clock,
            cleanup=cleanup,
            leave=script.leave,
            timeout=timeout,
            fallback=5.0,
            outage_grace=2.0,
            listen=listen,  # type: ignore[arg-type]
            fresh_for=fresh_for,
        )

    return run


async def drive(clock: VirtualClock, fn: Callable[[], object], limit: float = 60.0) -> Grant:
    """Run ``fn`` while moving the virtual clock in small steps until it ends."""
    result: dict[str, object] = {}

    async def run() -> None:
        try:
            result["value"] = await fn()  # type: ignore[misc]
        except Exception as exc:
            result["error"] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        while not result and clock.now() < limit:
            await clock.advance(0.05)
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    assert "value" in result, "still waiting when the test's time ran out"
    return result["value"]  # type: ignore[return-value]


GRANT = Turn(Grant(7, 0.0))
WAIT = Turn()


async def test_timeout_zero_asks_once_without_queueing(clock: VirtualClock) -> None:
    async with anyio.create_task_group() as tg:
        cleanup = Cleanup(clock, tg.start_soon)
        script = Script(clock, [WAIT])
        with pytest.raises(LockTimeout):
            await _turn(script, WaitRoom(), cleanup, 0)()  # type: ignore[misc]
        assert script.asked == [(0.0, False)] and script.left == 0


async def test_a_wake_up_ends_the_wait(clock: VirtualClock) -> None:
    room = WaitRoom()
    script = Script(clock, [WAIT, GRANT])
    result: list[Grant] = []
    async with anyio.create_task_group() as tg:
        cleanup = Cleanup(clock, tg.start_soon)

        async def run() -> None:
            result.append(await _turn(script, room, cleanup, None)())  # type: ignore[misc]

        tg.start_soon(run)
        await clock.advance(1.0)
        assert len(script.asked) == 1 and room.waiting("n") == 1
        room.wake("me")
        await clock.advance(0)
    assert result == [GRANT.grant] and script.asked == [(0.0, True), (1.0, True)]
    assert room.waiting() == 0 and script.left == 0


async def _woken_with_a_token(
    clock: VirtualClock, fresh_for: float, woken_at: float
) -> tuple[Grant, Script]:
    """A waiter asked at 0 and at 2.001 (a "not granted" both times); a wake-up carrying
    token 99 comes at ``woken_at``."""
    room = WaitRoom()
    script = Script(clock, [Turn(recheck_in=2.0), WAIT, GRANT])
    result: list[Grant] = []
    async with anyio.create_task_group() as tg:
        cleanup = Cleanup(clock, tg.start_soon)

        async def run() -> None:
            turn = _turn(script, room, cleanup, None, fresh_for=fresh_for)
            result.append(await turn())  # type: ignore[misc]

        tg.start_soon(run)
        await clock.advance(woken_at)
        room.wake("me", 99)
        await clock.advance(0)
    return result[0], script


async def test_a_carried_token_is_a_grant_counted_from_the_last_refused_ask(
    clock: VirtualClock,
) -> None:
    """The server granted the lock after it answered the ask sent at 2.001 (the last
    one), so the lease counts from then, whenever the wake-up arrives; no request is
    sent."""
    grant, script = await _woken_with_a_token(clock, fresh_for=10.0, woken_at=3.5)
    assert grant == Grant(99, pytest.approx(2.001))  # type: ignore[arg-type]
    assert [t for t, _ in script.asked] == [0.0, pytest.approx(2.001)]


async def test_a_stale_carried_token_is_claimed_by_asking(clock: VirtualClock) -> None:
    """Past ``fresh_for`` the lease counted from the last ask would be mostly gone: the
    waiter asks (its claim restarts the lease on the server) and takes that answer."""
    grant, script = await _woken_with_a_token(clock, fresh_for=1.0, woken_at=3.5)
    assert grant == GRANT.grant
    assert [t for t, _ in script.asked] == [0.0, pytest.approx(2.001), 3.5]


async def test_a_carried_token_from_before_a_later_answer_is_ignored(
    clock: VirtualClock,
) -> None:
    """A wake-up that arrives late: the waiter had asked again meanwhile and been told
    "not granted" with 100 as the last token handed out, so a carried 99 was granted
    before that answer (and lost since, say while the waiter was paused): the waiter
    must ask, not take it."""
    room = WaitRoom()
    script = Script(clock, [Turn(recheck_in=2.0, seen=50), Turn(seen=100), GRANT])
    result: list[Grant] = []
    async with anyio.create_task_group() as tg:
        cleanup = Cleanup(clock, tg.start_soon)

        async def run() -> None:
            turn = _turn(script, room, cleanup, None, fresh_for=10.0)
            result.append(await turn())  # type: ignore[misc]

        tg.start_soon(run)
        await clock.advance(2.5)
        room.wake("me", 99)
        await clock.advance(0)
    assert result == [GRANT.grant]
    assert [t for t, _ in script.asked] == [0.0, pytest.approx(2.001), 2.5]


async def test_a_lost_message_costs_a_bounded_fallback(clock: VirtualClock) -> None:
    script = Script(clock, [WAIT, GRANT])
    async with anyio.create_task_group() as tg:
        grant = await drive(clock, _turn(script, WaitRoom(), Cleanup(clock, tg.start_soon), None))
    assert grant == GRANT.grant
    again = script.asked[1][0]
    assert 5.0 <= again <= 7.5  # fallback 5 s, jittered up to 1.5x


async def test_recheck_in_bounds_the_wait(clock: VirtualClock) -> None:
    script = Script(clock, [Turn(recheck_in=0.3), GRANT])
    async with anyio.create_task_group() as tg:
        await drive(clock, _turn(script, WaitRoom(), Cleanup(clock, tg.start_soon), None))
    assert script.asked[1][0] == pytest.approx(0.301)


async def test_listening_anew_asks_again_at_once(clock: VirtualClock) -> None:
    states = [Listening.NEW, Listening.ON]

    async def listen(seat: Seat) -> Listening:
        return states.pop(0) if states else Listening.ON

    script = Script(clock, [WAIT, WAIT, GRANT])
    async with anyio.create_task_group() as tg:
        await drive(clock, _turn(script, WaitRoom(), Cleanup(clock, tg.start_soon), None, listen))
    assert script.asked[1][0] == 0.0  # asked again before sleeping
    assert script.asked[2][0] >= 5.0


async def test_timeout_raises_and_leaves_the_queue(clock: VirtualClock) -> None:
    room = WaitRoom()
    script = Script(clock, [WAIT])
    async with anyio.create_task_group() as tg:
        with pytest.raises(LockTimeout) as info:
            await drive(clock, _turn(script, room, Cleanup(clock, tg.start_soon), 2.0))
    assert info.value.timeout == 2.0
    assert clock.now() == pytest.approx(2.0)
    assert script.left == 1 and room.waiting() == 0


async def test_a_short_outage_is_ridden_out(clock: VirtualClock) -> None:
    down = BackendUnavailable("restarting")
    script = Script(clock, [down, down, down, GRANT])
    async with anyio.create_task_group() as tg:
        grant = await drive(clock, _turn(script, WaitRoom(), Cleanup(clock, tg.start_soon), 5.0))
    assert grant == GRANT.grant and len(script.asked) == 4
    assert script.asked[-1][0] == pytest.approx(0.75)


async def test_a_long_outage_gives_up_after_the_grace(clock: VirtualClock) -> None:
    script = Script(clock, [BackendUnavailable("down")])
    async with anyio.create_task_group() as tg:
        with pytest.raises(BackendUnavailable):
            await drive(clock, _turn(script, WaitRoom(), Cleanup(clock, tg.start_soon), None))
    assert 2.0 <= clock.now() <= 2.5
    assert script.left == 1  # the first try may have queued: cleaned up


async def test_an_outage_never_outlasts_the_deadline(clock: VirtualClock) -> None:
    script = Script(clock, [BackendUnavailable("down")])
    async with anyio.create_task_group() as tg:
        with pytest.raises(BackendUnavailable):
            await drive(clock, _turn(script, WaitRoom(), Cleanup(clock, tg.start_soon), 0.6))
    assert clock.now() == pytest.approx(0.6)


async def test_cancellation_leaves_the_queue(clock: VirtualClock) -> None:
    room = WaitRoom()
    script = Script(clock, [WAIT])
    async with anyio.create_task_group() as tg:
        cleanup = Cleanup(clock, tg.start_soon)
        with anyio.CancelScope() as scope:
            tg.start_soon(clock.advance, 1.0)
            tg.start_soon(lambda: _cancel_at(clock, scope, 0.5))
            await _turn(script, room, cleanup, None)()  # type: ignore[misc]
    assert scope.cancelled_caught and script.left == 1 and room.waiting() == 0


async def _cancel_at(clock: VirtualClock, scope: anyio.CancelScope, when: float) -> None:
    await clock.sleep_until(when)
    scope.cancel()


# -- cleanup -------------------------------------------------------------------------


async def test_cleanup_retries_in_the_background_until_it_succeeds(clock: VirtualClock) -> None:
    attempts: list[float] = []

    async def flaky() -> None:
        attempts.append(clock.now())
        if len(attempts) < 4:
            raise BackendUnavailable("not yet")

    async with anyio.create_task_group() as tg:
        cleanup = Cleanup(clock, tg.start_soon, retry_every=0.2)
        assert await cleanup.run("undo", flaky) is False
        assert cleanup.pending == 1
        for _ in range(20):
            await clock.advance(0.1)
        assert cleanup.pending == 0
    assert len(attempts) == 4
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps == sorted(gaps)  # backing off


async def test_cleanup_gives_up_once_it_stops_mattering(clock: VirtualClock) -> None:
    attempts = 0

    async def never() -> None:
        nonlocal attempts
        attempts += 1
        raise BackendUnavailable("down")

    async with anyio.create_task_group() as tg:
        cleanup = Cleanup(clock, tg.start_soon, retry_every=0.5)
        await cleanup.run("undo", never, keep=3.0)
        for _ in range(20):
            await clock.advance(1.0)
        assert cleanup.pending == 0
    assert 2 <= attempts <= 6


async def test_cleanup_runs_even_when_the_caller_is_cancelled(clock: VirtualClock) -> None:
    done: list[bool] = []

    async def undo() -> None:
        await anyio.lowlevel.checkpoint()
        done.append(True)

    async with anyio.create_task_group() as tg:
        cleanup = Cleanup(clock, tg.start_soon)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await cleanup.run("undo", undo)
    assert done == [True]


async def test_cleanup_close_tries_pending_work_once_more(clock: VirtualClock) -> None:
    calls = 0

    async def undo() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise BackendUnavailable("down")

    async with anyio.create_task_group() as tg:
        cleanup = Cleanup(clock, tg.start_soon, retry_every=60)
        await cleanup.run("undo", undo)
        await cleanup.aclose(1.0)
        tg.cancel_scope.cancel()
    assert calls == 2 and cleanup.pending == 0


async def test_closing_the_room_ends_a_wait(clock: VirtualClock) -> None:
    room = WaitRoom()
    script = Script(clock, [WAIT])
    errors: list[BaseException] = []
    async with anyio.create_task_group() as tg:
        cleanup = Cleanup(clock, tg.start_soon)

        async def run() -> None:
            try:
                await _turn(script, room, cleanup, None)()  # type: ignore[misc]
            except LockUsageError as exc:
                errors.append(exc)

        tg.start_soon(run)
        await clock.advance(1.0)
        assert room.waiting("n") == 1
        room.close()
        await clock.advance(0)
    assert len(errors) == 1 and "closed while waiting" in str(errors[0])
    assert script.left == 1 and room.waiting() == 0
