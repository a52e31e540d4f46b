"""The machinery every network backend needs for waiting, shared by all of them.

* :class:`WaitRoom`: this client's waiters, one :class:`Seat` each, woken one at a time
  by owner id (a wake-up that arrives before its waiter sat down is kept, bounded).
  Per-name ``on_first``/``on_last`` hooks are where a backend opens and closes the one
  subscription or watch a name needs, however many local tasks wait on it.
* :func:`wait_turn`: the one wait loop. It asks the backend's ``try_once``, waits for a
  wake-up, a re-check time the backend named (a lease about to end) or a jittered
  fallback re-check (a lost message costs a bounded delay, never a hang), rides out a
  short outage, and leaves nothing behind when it ends without a grant.
* :class:`Cleanup`: runs an undo action shielded from cancellation and bounded in time;
  a failure is retried in the client's task group until it succeeds or stops mattering.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import final

import anyio

from ._backend import Action, CleanupQueue, Grant
from ._clock import Clock
from ._errors import BackendUnavailable, LockTimeout, LockUsageError
from ._events import queued

__all__ = ("Cleanup", "Listening", "Seat", "Turn", "WaitRoom", "wait_turn")

logger = logging.getLogger("lockkit")

#: Wake-ups kept for waiters that have not sat down yet.
EARLY_LIMIT = 1024
#: While an outage lasts, a waiter asks again this often.
OUTAGE_RETRY = 0.25
#: A waiter that cannot listen for wake-ups (its node is down) looks again this soon.
DEAF_RECHECK = 0.5


@final
class Seat:
    """One waiting acquisition: its name, owner id and the event that wakes it, and
    the token the wake-up carried when the server granted the lock outright."""

    __slots__ = ("event", "name", "owner", "token")

    def __init__(self, name: str, owner: str) -> None:
        self.name = name
        self.owner = owner
        self.event = anyio.Event()
        self.token: int | None = None


@final
class WaitRoom:
    """This client's waiters, routed by owner id.

    Args:
        on_first: called with a name when its first local waiter sits down.
        on_last: called with a name when its last local waiter leaves.
    """

    def __init__(
        self,
        *,
        on_first: Callable[[str], None] | None = None,
        on_last: Callable[[str], None] | None = None,
    ) -> None:
        self._seats: dict[str, Seat] = {}
        self._by_name: dict[str, dict[str, Seat]] = {}
        #: wake-ups that came before their waiter sat down: owner -> token (or None)
        self._early: dict[str, int | None] = {}
        self._on_first = on_first
        self._on_last = on_last
        self._changed = anyio.Event()
        #: Wake-ups routed to a seated waiter.
        self.wakeups = 0
        #: Set by :meth:`close`.
        self.closed = False
        self._leaving = 0
        self._drained = anyio.Event()
        #: Called with the owner of a wake-up that found no waiter seated: one whose
        #: first ask is still on its way back, or one whose wait is over (the backend
        #: tells them apart).
        self.on_stray: Callable[[str], None] | None = None

    def sit(self, name: str, owner: str) -> Seat:
        """Seat ``owner`` as a waiter on ``name``; already woken if a wake-up came first."""
        seat = Seat(name, owner)
        self._seats[owner] = seat
        peers = self._by_name.get(name)
        if peers is None:
            peers = self._by_name[name] = {}
            if self._on_first is not None:
                self._on_first(name)
        peers[owner] = seat
        if owner in self._early:
            seat.token = self._early.pop(owner)
            seat.event.set()
        self._changed.set()
        return seat

    def close(self) -> None:
        """The backend is closing: wake every waiter; :func:`wait_turn` then leaves the
        queue and raises LockUsageError. See :meth:`drained`."""
        self.closed = True
        self.wake_all()

    @contextlib.contextmanager
    def leaving(self) -> Iterator[None]:
        """Around a waiter's cleanup: :meth:`drained` waits for it."""
        self._leaving += 1
        try:
            yield
        finally:
            self._leaving -= 1
            if not self._leaving and not self._seats:
                self._drained.set()

    async def drained(self) -> None:
        """Return once no waiter sits and no cleanup of one is in flight (after
        :meth:`close`: the backend may close its connections then)."""
        while self._seats or self._leaving:
            self._drained = anyio.Event()
            await self._drained.wait()

    def rearm(self, seat: Seat) -> None:
        """A fresh event, taken *before* asking again, so that a wake-up sent while the
        question is in flight is not lost. A token a wake-up carried is dropped: the
        answer to the question decides."""
        seat.event = anyio.Event()
        seat.token = None

    def leave(self, seat: Seat) -> bool:
        """Remove ``seat``; True if it was the last local waiter on its name."""
        if self._seats.get(seat.owner) is seat:
            del self._seats[seat.owner]
        peers = self._by_name.get(seat.name)
        if peers is None or peers.get(seat.owner) is not seat:
            return False
        del peers[seat.owner]
        if peers:
            return False
        del self._by_name[seat.name]
        if self._on_last is not None:
            self._on_last(seat.name)
        if not self._seats and not self._leaving:
            self._drained.set()
        return True

    def wake(self, owner: str, token: int | None = None) -> None:
        """Wake the waiter ``owner`` (``token``: the server granted it the lock outright
        and minted this token); remember it (bounded) if it has not sat down yet."""
        seat = self._seats.get(owner)
        if seat is not None:
            self.wakeups += 1
            if token is not None:
                seat.token = token
            seat.event.set()
            return
        if len(self._early) >= EARLY_LIMIT:
            self._early.pop(next(iter(self._early)))
        self._early[owner] = token
        if self.on_stray is not None:
            self.on_stray(owner)

    def wake_name(self, name: str) -> None:
        """Wake every local waiter on ``name`` (its subscription moved or was lost)."""
        for seat in self._by_name.get(name, {}).values():
            seat.event.set()

    def wake_all(self) -> None:
        """Wake every waiter (the wake-up channel reconnected: messages may be lost)."""
        for seat in self._seats.values():
            seat.event.set()

    def waiting(self, name: str | None = None) -> int:
        """Local waiters on ``name``, or on all names."""
        if name is None:
            return len(self._seats)
        return len(self._by_name.get(name, ()))

    def names(self) -> list[str]:
        """Names with at least one local waiter."""
        return list(self._by_name)

    def owners(self, name: str) -> list[str]:
        """The owner ids of the local waiters on ``name``."""
        return list(self._by_name.get(name, ()))

    def forget(self, owners: Iterable[str]) -> None:
        """Drop the kept wake-ups of ``owners`` (their waits are over)."""
        for owner in owners:
            self._early.pop(owner, None)

    async def wait_for_waiters(self) -> None:
        """Return once anyone is waiting (at once if someone already is)."""
        while not self._seats:
            self._changed = anyio.Event()
            await self._changed.wait()


class Listening(enum.Enum):
    """What a backend's ``listen`` hook reports before a waiter sleeps."""

    #: Just started listening: a release may have passed before, so ask again first.
    NEW = "new"
    #: Listening; sleep until woken.
    ON = "on"
    #: Cannot listen now (the node is unreachable): look again soon.
    DOWN = "down"


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Turn:
    """A backend's answer to one try.

    Attributes:
        grant: set when the try took the lock.
        recheck_in: seconds after which the lock may come free with no message sent
            (the holder's lease ends and this waiter is first in line); ``None`` when
            only a wake-up (or the fallback re-check) should end the wait.
        seen: the last token the server had handed out when it answered "not granted"
            (backends whose wake-ups carry tokens): a carried token no higher than it
            was granted before that answer, so its grant is gone.
    """

    grant: Grant | None = None
    recheck_in: float | None = None
    seen: int = 0


TryOnce = Callable[[bool], Awaitable[Turn]]


async def wait_turn(
    try_once: TryOnce,
    *,
    name: str,
    owner: str,
    room: WaitRoom,
    clock: Clock,
    cleanup: CleanupQueue,
    leave: Action,
    timeout: float | None,
    fallback: float,
    outage_grace: float,
    listen: Callable[[Seat], Awaitable[Listening]] | None = None,
    fresh_for: float = 0.0,
) -> Grant:
    """Acquire through ``try_once`` (its argument: whether to join the queue), waiting
    for turns as long as ``timeout`` allows.

    ``timeout=0`` is one try without queueing. Otherwise the first try already queues;
    a free lock costs that one round trip and no local bookkeeping. On any exit without
    a grant (timeout, error, cancellation) ``leave`` runs through ``cleanup``. A wait
    ends with LockUsageError when the room is closed (the backend is closing).

    A wake-up may carry a token (:meth:`WaitRoom.wake`): the server granted the lock
    to this waiter outright. A message can arrive late, after answers the server gave
    later: a token no higher than the last one those "not granted" answers reported
    (:attr:`Turn.seen`) was granted before them and is gone, and is ignored. A higher
    one was granted after the last such answer, so that ask's send time is a lower
    bound of the grant's and the lease counts from it: taken without a round trip while
    it is less than ``fresh_for`` seconds old (0: never); otherwise the waiter asks once
    more (the backend's answer to that ask is the claim, and counts the lease anew).

    Raises:
        LockTimeout: not granted in time. BackendUnavailable: the backend stayed
        unreachable past ``outage_grace`` (or past the deadline).
    """
    if timeout == 0:
        try:
            once = await try_once(False)
        except BaseException:
            await cleanup.run(f"clean up a try on {name!r}", leave)
            raise
        if once.grant is None:
            raise LockTimeout(name, 0)
        return once.grant
    deadline = math.inf if timeout is None else clock.now() + timeout
    turn: Turn | None = None
    outage_since: float | None = None
    seat: Seat | None = None
    basis = -math.inf  # when the last ask the server answered "not granted" was sent
    seen = 0  # the highest token the server had handed out at those answers
    try:
        while True:
            if turn is None:  # ask (again)
                if room.closed:
                    raise LockUsageError(f"the LockClient was closed while waiting for {name!r}")
                if outage_since is not None:  # the last ask met an outage: pause first
                    await clock.wait(anyio.Event(), min(clock.now() + OUTAGE_RETRY, deadline))
                asked = clock.now()
                try:
                    turn = await try_once(True)
                except BackendUnavailable:
                    # ride out a short outage (a restart, a failover) while time is left
                    outage_since = asked if outage_since is None else outage_since
                    if asked - outage_since >= outage_grace or asked >= deadline:
                        raise
                    if seat is not None:
                        room.rearm(seat)
                    continue
                outage_since = None
                if turn.grant is not None:
                    return turn.grant
                basis, seen = asked, max(seen, turn.seen)
            if seat is None:
                seat = room.sit(name, owner)
                queued()  # for listeners (position unknown here)
            state = Listening.ON if listen is None else await listen(seat)
            if state is Listening.NEW:
                room.rearm(seat)
                turn = None
                continue
            now = clock.now()
            if now >= deadline:
                raise LockTimeout(name, math.inf if timeout is None else timeout)
            if turn.recheck_in is not None:
                bound = now + turn.recheck_in + 0.001
            elif state is Listening.DOWN:
                bound = now + DEAF_RECHECK
            else:  # only a lost message leaves us here: a slow, jittered re-check
                bound = now + fallback * random.uniform(1.0, 1.5)
            await clock.wait(seat.event, min(bound, deadline))
            token = seat.token
            if token is not None and token > seen and clock.now() - basis < fresh_for:
                return Grant(token, basis)
            room.rearm(seat)  # before asking again: a wake-up during the ask is kept
            turn = None
    except BaseException:
        with room.leaving():  # a closing backend waits for this before disconnecting
            if seat is not None:
                room.leave(seat)
                seat = None
            await cleanup.run(f"leave the queue of {name!r}", leave)
        raise
    finally:
        if seat is not None:
            room.leave(seat)


@dataclasses.dataclass(slots=True, eq=False)
class _Pending:
    what: str
    action: Action
    until: float


@final
class Cleanup:
    """Undo actions (leave a queue, release a lock) that must reach the server.

    :meth:`run` runs an action shielded from cancellation and bounded by ``timeout``;
    if it fails, the action is retried in the background every ``retry_every``
    seconds (doubling up to 5 s) until it succeeds or ``keep`` seconds have passed,
    after which the server forgets it by itself (queue entries and leases expire).
    """

    def __init__(
        self,
        clock: Clock,
        start_soon: Callable[..., object],
        *,
        timeout: float = 10.0,
        retry_every: float = 0.2,
        keep: float = 120.0,
    ) -> None:
        self._clock = clock
        self._start_soon = start_soon
        self.timeout = timeout
        self.retry_every = retry_every
        self.keep = keep
        self._pending: list[_Pending] = []
        self._running = False
        self._closed = False

    @property
    def pending(self) -> int:
        """Actions that failed and wait for a retry."""
        return len(self._pending)

    async def run(self, what: str, action: Action, keep: float | None = None) -> bool:
        """Run ``action`` now, shielded and bounded; True if it succeeded. A failure is
        logged and queued for retry (for ``keep`` seconds, default the instance's)."""
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self.timeout):
                try:
                    await action()
                    return True
                except Exception as exc:
                    logger.info("could not %s, will retry: %s", what, exc)
        self.defer(what, action, keep=keep)
        return False

    def defer(self, what: str, action: Action, *, keep: float | None = None) -> None:
        """Queue ``action`` to run in the background, retried until it succeeds."""
        until = self._clock.now() + (self.keep if keep is None else keep)
        self._pending.append(_Pending(what, action, until))
        if not self._running and not self._closed:
            self._running = True
            self._start_soon(self._retry, name="lockkit-cleanup")

    async def _retry(self) -> None:
        delay = self.retry_every
        try:
            while self._pending:
                await self._clock.sleep_until(self._clock.now() + delay)
                delay = self.retry_every if await self.flush() else min(delay * 2, 5.0)
        finally:
            self._running = False

    async def flush(self) -> bool:
        """Try every pending action once (shielded, bounded); True if all succeeded."""
        batch, self._pending = self._pending, []
        now = self._clock.now()
        ok = True
        for item in batch:
            if now >= item.until:
                logger.warning("gave up trying to %s; the server lets it expire", item.what)
                continue
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.timeout) as scope:
                try:
                    await item.action()
                    continue
                except Exception as exc:
                    logger.info("could not %s yet: %s", item.what, exc)
            if scope.cancelled_caught:
                logger.info("could not %s yet: timed out", item.what)
            ok = False
            self._pending.append(item)
        return ok

    async def aclose(self, timeout: float) -> None:
        """One last try of every pending action, within ``timeout`` seconds."""
        self._closed = True
        if not self._pending:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
            await self.flush()
        for item in self._pending:
            logger.warning("could not %s before closing; the server lets it expire", item.what)
        self._pending.clear()
