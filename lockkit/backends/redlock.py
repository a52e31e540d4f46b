"""The Redlock backend: one lock over several independent Redis masters (``redlock://``).

URL grammar::

    redlock://[user[:password]@]h1[:6379],h2[:6379],h3[:6379][,...][/db][?option=value...]
    redlocks://...                          (TLS to every master; same grammar and options)

Per-master credentials or TLS: :meth:`RedlockBackend.from_urls` with one ``redis://`` or
``rediss://`` URL per master; the application's clients: :meth:`RedlockBackend.from_clients`.
At least three masters; the quorum is a majority of the masters *configured*, however
many answer.

Options (keyword or query string), besides ``prefix``, ``fair``, ``timeout``,
``connect_timeout``, ``fence_keep`` and the ``ssl_*`` files, which mean what they mean
for ``redis://``:

================  =======  ==============================================================
``drift_factor``  0.01     share of the ttl kept back for clock drift between the client
                           and the masters
``drift_extra``   0.002    seconds kept back on top of it
================  =======  ==============================================================

Each master keeps a whole Redis lock (the same scripts and key layout as ``redis://``:
owner key with the lease, token register, FIFO queue, liveness of queued clients).

Acquiring is one round of the acquire script on every master at once; the round ends
when a majority granted (or can no longer grant), plus a short grace for the others, so
its latency is that of the slowest master of the fastest majority. The grant counts only
if the validity ``ttl - elapsed - (drift_factor * ttl + drift_extra)``, with elapsed
measured on the client's monotonic clock from before the round, is still positive. A
round that falls short gives back what it got at once, on every master: a waiter keeps
those masters reserved for itself for 2 s (its turn is kept), a single try hands them on.

Tokens: a max-register held by a quorum. The client proposes a floor (its wall clock in
microseconds, or one more than the highest token it has seen); each granting master
answers ``max(its register + 1, floor)`` and stores that. The token is the maximum over
the granting masters. When at least a majority stored that very value (the usual case:
the floor wins everywhere) the lock is held after **one round**; otherwise a second
round writes the maximum back to the granting masters that are behind, and the lock is
reported held only once a majority of granting masters carry it (**two rounds**). Any
two majorities share a master, and the earlier holder's token was on a majority of the
masters that granted it before it was reported held, so the next holder's token is
higher: tokens never go back while no master loses acknowledged writes.

Restart rule: a master restarted without its data (no AOF with ``appendfsync always``)
must stay out of service for at least the longest ttl in use. Brought back at once it
forgets the leases it granted: another client can then collect a majority while a
holder still holds, and, as it forgot its token register too, hand out a token that is
not above the current one (only the floor, the client's clock, keeps tokens rising then).

Clock assumptions: every master's clock advances at about the rate of the client's
monotonic clock (leases expire on server time; ``drift_factor`` covers the difference),
and no master's clock jumps. Wall clocks are used only for proposals (token floors and
queue order); a client whose wall clock is behind costs a second round, never safety.

Waiting: a waiter queues on every master with the same score (its wall clock at the
first try), so every master orders waiters the same way. Releases publish on the
waiter's client channel on each master; one message is enough to try again. A waiter
first in line where the holder's lease will end also wakes by itself, and every waiter
re-checks on a jittered fallback timer. Cancelling a waiter leaves every master's queue.
Renewals need a majority within the lease's safe deadline; otherwise the lease is lost.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Final, final

import anyio
from redis.asyncio import Redis

from .._core._backend import (
    Action,
    Backend,
    BackendContext,
    BackendStatistics,
    Capability,
    Claim,
    Grant,
    HolderInfo,
    LockInfo,
    Renewal,
    current_task_name,
    owner_record,
    task_field,
)
from .._core._errors import BackendUnavailable, ConfigurationError, LockError, LockUsageError
from .._core._options import TlsOptions, as_bool, as_seconds, option, parse_options
from .._core._url import LockURL, parse_url
from .._core._waiting import Listening, Seat, Turn, WaitRoom, wait_turn
from .._drivers.redis.errors import DRIVER_ERRORS, driver_error, is_refused
from .._drivers.redis.options import as_prefix
from .._drivers.redis.resp import Arg, ConnectOptions, Encoded, Script
from .._drivers.redis.scripts import (
    ACQUIRE,
    EXTEND,
    INSPECT,
    REFRESH,
    RELEASE,
    LockKeys,
    inspect_records,
    load,
    name_scan,
)
from .._drivers.redis.topology import AppClient, Executor, Single
from .._drivers.redis.wakeups import Listen, Wakeups

__all__ = ("RedlockBackend", "RedlockOptions")

logger = logging.getLogger("lockkit.redlock")

FENCE = load("redlock_fence")
YIELD = load("redlock_yield")
#: Queue entries of a client that stopped refreshing them are skipped after this.
QUEUE_LEASE = 3.0
#: A lock handed (or given back) to a waiter stays reserved for it this long.
CLAIM_WINDOW = 2.0
#: Seconds the other masters' answers are still awaited once a round is decided.
LATE = 0.02
BATCH = 500
#: Queue entries :meth:`RedlockBackend.inspect` lists.
INSPECT_QUEUE = 100
#: A round's result for a master that did not answer in time.
MISSING: Final = object()


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _as_fraction(value: object) -> float:
    result = float(value)  # type: ignore[arg-type]
    if not 0 <= result < 0.5:
        raise ValueError(f"expected a fraction from 0 to 0.5, got {value!r}")
    return result


def _as_drift(value: object) -> float:
    result = float(value)  # type: ignore[arg-type]
    if not 0 <= result < math.inf:
        raise ValueError(f"expected 0 or more seconds, got {value!r}")
    return result


@dataclasses.dataclass(frozen=True, kw_only=True)
class RedlockLockOptions:
    """Options of the algorithm; valid for URLs and for ``from_clients``."""

    prefix: str = option("lockkit:", as_prefix)
    fair: bool = option(True, as_bool)
    #: Seconds a command may wait for one master's reply.
    timeout: float = option(5.0, as_seconds)
    fence_keep: float = option(3600.0, as_seconds)
    drift_factor: float = option(0.01, _as_fraction)
    drift_extra: float = option(0.002, _as_drift)


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class RedlockOptions(RedlockLockOptions):
    """Options of a backend built from URLs: the algorithm's plus the connections'."""

    connect_timeout: float = option(5.0, as_seconds)
    tls: TlsOptions = dataclasses.field(default_factory=TlsOptions)


@dataclasses.dataclass(eq=False, slots=True)
class _Master:
    topology: Single | AppClient
    connect: ConnectOptions
    executor: Executor | None = None
    wakeups: Wakeups | None = None


@dataclasses.dataclass(eq=False, slots=True)
class _Attempt:
    name: str
    keys: LockKeys
    owner: str
    ttl: float
    #: the queue score, the same on every master and for every try
    stamp: int
    #: when the caller stops waiting (clock time)
    deadline: float
    #: the owner record's task field (see :func:`owner_record`)
    task: str = "null"


@final
class RedlockBackend(Backend):
    """Locks held by a majority of independent Redis masters, with monotonic tokens.

    See the module docstring for the algorithm, the token register, the restart rule
    and the clock assumptions.

    .. versionadded:: 0.1
    """

    kind: ClassVar[str] = "redlock"
    schemes: ClassVar[tuple[str, ...]] = ("redlock", "redlocks")
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.FAIR,
            Capability.DISTRIBUTED,
            Capability.BATCH_RENEW,
            Capability.NOTIFY,
            Capability.LIST,
            Capability.FORCE_RELEASE,
        }
    )

    def __init__(self, masters: Sequence[_Master], options: RedlockLockOptions) -> None:
        if len(masters) < 3:
            raise ConfigurationError(
                f"Redlock needs at least 3 independent masters, got {len(masters)}; "
                "use redis:// for one server"
            )
        self._masters = list(masters)
        self.options = options
        #: how many masters must agree: a majority of those configured
        self.quorum = len(masters) // 2 + 1
        self.client_id = secrets.token_hex(8)
        self._channel = f"{options.prefix}c:{self.client_id}"
        channel_format = f"{options.prefix}c:".replace("%", "%%") + "%s"
        fair = b"1" if options.fair else b"0"
        self._acquire_tail = Encoded(
            self.client_id, fair, _ms(QUEUE_LEASE), _ms(options.fence_keep), channel_format, b"1"
        )
        self._release_tail = Encoded(self.client_id, _ms(CLAIM_WINDOW), fair, channel_format, b"1")
        self._keys: dict[str, LockKeys] = {}
        self._requests: collections.Counter[str] = collections.Counter()
        #: the highest token this client has seen: its next proposals start above it
        self._high = 0
        self._open = False
        self._room = WaitRoom()
        self._outage_grace = max(10.0, 3 * options.timeout)

    # -- construction ----------------------------------------------------------------

    @classmethod
    def from_url(cls, url: LockURL, **options: Any) -> RedlockBackend:
        opts = parse_options(RedlockOptions, cls.kind, url.query, options)
        tls = url.scheme == "redlocks"
        connect = ConnectOptions(
            url.username,
            url.password,
            opts.tls if tls else None,
            opts.tls.context() if tls else None,
            opts.connect_timeout,
            opts.timeout,
        )
        db = url.path.strip("/")
        if db and not db.isdigit():
            raise ConfigurationError(f"the database in a Redlock URL is a number, got {db!r}")
        return cls(
            [_Master(Single(h, p or 6379, int(db or 0)), connect) for h, p in url.hosts], opts
        )

    @classmethod
    def from_urls(cls, urls: Sequence[str], **options: Any) -> RedlockBackend:
        """One ``redis://`` or ``rediss://`` URL per master, each with its own
        credentials, database and TLS; ``options`` apply to all of them."""
        opts = parse_options(RedlockOptions, cls.kind, {}, options)
        masters = []
        for text in urls:
            url = parse_url(text)
            if url.scheme not in ("redis", "rediss") or len(url.hosts) != 1:
                raise ConfigurationError(
                    f"from_urls() takes one redis:// or rediss:// server per URL, got {url}"
                )
            tls = url.scheme == "rediss"
            connect = ConnectOptions(
                url.username,
                url.password,
                opts.tls if tls else None,
                opts.tls.context() if tls else None,
                opts.connect_timeout,
                opts.timeout,
            )
            (host, port), db = url.hosts[0], url.path.strip("/")
            if db and not db.isdigit():
                raise ConfigurationError(f"the database in {url} is not a number")
            masters.append(_Master(Single(host, port or 6379, int(db or 0)), connect))
        return cls(masters, opts)

    @classmethod
    def from_clients(cls, clients: Sequence[Redis], **options: Any) -> RedlockBackend:
        """The application's ``redis.asyncio.Redis`` clients, one per master; lockkit
        never closes them (it borrows one pub/sub connection from each pool)."""
        if any(not isinstance(c, Redis) for c in clients):
            raise ConfigurationError("from_clients() takes redis.asyncio.Redis clients")
        opts = parse_options(RedlockLockOptions, cls.kind, {}, options)
        connect = ConnectOptions(timeout=opts.timeout)
        return cls([_Master(AppClient(c), connect) for c in clients], opts)

    # -- lifecycle -------------------------------------------------------------------

    async def aopen(self, ctx: BackendContext) -> None:
        await super().aopen(ctx)
        listen = Listen(self._channel, self.client_id, self.keys, ctx.start_soon, self._room)
        for m in self._masters:
            m.executor = m.topology.open(m.connect)
            m.wakeups = m.executor.wakeups(listen)
        self._open = True
        await self.ping()
        ctx.start_soon(self._keep_queue_alive, name="lockkit-redlock-queue-keeper")

    async def aclose(self) -> None:
        self._open = False
        self._room.close()
        for m in self._masters:
            if m.wakeups is not None:
                await m.wakeups.aclose()
        with anyio.move_on_after(self.options.timeout):
            await self._room.drained()
        for m in self._masters:
            executor, m.executor = m.executor, None
            if executor is not None:
                await executor.aclose()

    async def ping(self) -> None:
        replies = await self._round(lambda m: self._ex(m).execute("PING"), "ping", None)
        for r in replies:
            if isinstance(r, BaseException) and is_refused(r):
                raise driver_error(r, "log in to a Redlock master")
        self._need_quorum(replies, "ping")

    def statistics(self) -> BackendStatistics:
        ctx = self._context
        return BackendStatistics(
            dict(self._requests),
            self._room.wakeups,
            sum(m.wakeups.subscriptions for m in self._masters if m.wakeups is not None),
            self._room.waiting(),
            ctx.cleanup.pending if ctx else 0,
        )

    # -- plumbing --------------------------------------------------------------------

    def keys(self, name: str) -> LockKeys:
        """The keys that hold lock ``name`` on each master."""
        keys = self._keys.get(name)
        if keys is None:
            if len(self._keys) >= 4096:
                self._keys.clear()
            keys = self._keys[name] = LockKeys(self.options.prefix, name)
        return keys

    def _ex(self, m: _Master) -> Executor:
        if m.executor is None or not self._open:
            raise LockUsageError("the Redlock backend is not open")
        return m.executor

    async def _round(
        self,
        call: Callable[[_Master], Awaitable[Any]],
        what: str | None,
        decided: Callable[[list[Any]], bool] | None,
        masters: Sequence[_Master] | None = None,
        *,
        limit: float | None = None,
    ) -> list[Any]:
        """``call`` on every master (or ``masters``) at once. One result per master: its
        reply, the exception it raised, or MISSING. Once ``decided(results)`` holds (or
        a majority answered, without ``decided``), the rest get :data:`LATE` seconds;
        none gets more than ``limit`` seconds."""
        masters = self._masters if masters is None else masters
        if what is not None:
            self._requests[what] += len(masters)
        results: list[Any] = [MISSING] * len(masters)
        loop = asyncio.get_running_loop()
        enough, done = loop.create_future(), loop.create_future()
        left = len(masters)

        def finished(i: int, task: asyncio.Task[Any]) -> None:
            nonlocal left
            left -= 1
            if not task.cancelled():
                exc = task.exception()
                results[i] = task.result() if exc is None else exc
            if left == 0 and not done.done():
                done.set_result(None)
            if not enough.done():
                answered = len(masters) - left
                if left == 0 or (decided(results) if decided else answered >= self.quorum):
                    enough.set_result(None)

        tasks = []
        for i, m in enumerate(masters):
            task = asyncio.ensure_future(call(m))
            task.add_done_callback(functools.partial(finished, i))
            tasks.append(task)
        try:
            with anyio.move_on_after(math.inf if limit is None else limit):
                await asyncio.shield(enough)
            if left and enough.done():
                with anyio.move_on_after(LATE):
                    await asyncio.shield(done)
        finally:
            for task in tasks:
                task.cancel()
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, (*DRIVER_ERRORS, LockError)):
                raise r
        return results

    def _script(
        self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]
    ) -> Callable[[_Master], Awaitable[Any]]:
        """Run ``script`` on one master (for :meth:`_round`)."""
        return lambda m: self._ex(m).evalsha(script, keys, args)

    def _need_quorum(self, replies: list[Any], what: str) -> None:
        failed = [r for r in replies if r is MISSING or isinstance(r, BaseException)]
        if len(failed) > len(self._masters) - self.quorum:
            errors = [r for r in failed if isinstance(r, BaseException)]
            detail = f": {driver_error(errors[0], what)}" if errors else ""
            raise BackendUnavailable(
                f"only {len(replies) - len(failed)} of {len(replies)} Redlock masters "
                f"answered ({self.quorum} needed) to {what}{detail}"
            )

    def wall_us(self) -> int:
        """This client's wall clock in microseconds: token floors and queue scores."""
        return time.time_ns() // 1000

    def propose(self) -> int:
        """The token floor this client proposes: above its clock and every token it saw.
        Safety never depends on it; when it wins on a majority, acquiring is one round."""
        return max(self.wall_us(), self._high + 1)

    def _drift(self, ttl: float) -> float:
        return ttl * self.options.drift_factor + self.options.drift_extra

    # -- acquiring -------------------------------------------------------------------

    async def acquire(self, claim: Claim, *, timeout: float | None) -> Grant:
        if not claim.exclusive:
            raise ConfigurationError("the Redlock backend offers exclusive locks only")
        if not self._open:
            raise LockUsageError("the Redlock backend is not open")
        attempt = _Attempt(
            claim.name,
            self.keys(claim.name),
            claim.owner,
            claim.ttl,
            self.wall_us(),
            math.inf if not timeout else self.clock.now() + timeout,
            task_field(current_task_name()),
        )
        ctx = self.context
        return await wait_turn(
            functools.partial(self._try, attempt),
            name=claim.name,
            owner=claim.owner,
            room=self._room,
            clock=self.clock,
            cleanup=ctx.cleanup,
            leave=self._leaver(attempt),
            timeout=timeout,
            fallback=min(5.0, max(0.5, claim.ttl / 2)),
            outage_grace=self._outage_grace,
            listen=self._listen,
        )

    async def _try(self, att: _Attempt, queue: bool) -> Turn:
        """One round: take the lock on a majority, or give back what was taken."""
        q, n = self.quorum, len(self._masters)
        started = self.clock.now()
        floor = self.propose()
        keys = (att.keys.encoded,)
        args = (
            att.owner,
            _ms(att.ttl),
            b"1" if queue else b"0",
            self._acquire_tail,
            floor,
            att.stamp,
            owner_record(field=att.task),
        )

        def decided(results: list[Any]) -> bool:
            granted = sum(1 for r in results if isinstance(r, list) and r[0] == 1)
            refused = sum(1 for r in results if r is not MISSING and not _granted(r))
            return granted >= q or refused > n - q

        # a round never outlasts the lease it asks for, nor the caller's patience
        limit = min(att.ttl, max(att.deadline - started, LATE))
        replies = await self._round(
            lambda m: self._ex(m).evalsha(ACQUIRE, keys, args), "acquire", decided, limit=limit
        )
        granted = {i: int(r[1]) for i, r in enumerate(replies) if _granted(r)}
        if len(granted) >= q:
            top = max(granted.values())
            carried = sum(1 for t in granted.values() if t == top)
            if carried < q:  # second round: the maximum goes back to those behind
                behind = [self._masters[i] for i, t in granted.items() if t < top]
                fence_args = (top, _ms(self.options.fence_keep), att.owner)
                fence_keys = (att.keys.fence, att.keys.owner)
                written = await self._round(
                    lambda m: self._ex(m).evalsha(FENCE, fence_keys, fence_args),
                    "fence",
                    None,
                    behind,
                )
                carried += sum(1 for r in written if r == 1)
            valid = att.ttl - (self.clock.now() - started) - self._drift(att.ttl)
            if carried >= q and valid > 0:
                self._high = max(self._high, top)
                queued = [m for m, r in zip(self._masters, replies, strict=True) if _waiting(r)]
                if queued:  # leave the queues where someone else was first
                    self.context.start_soon(self._leave, att.keys, att.owner, queued, False)
                return Turn(Grant(top, started))
        # short of a majority: give back what was taken at once; what a master that has
        # not answered may still take is given back in the background (in order: after
        # the acquire on the same connection)
        pairs = list(zip(self._masters, replies, strict=True))
        took = [m for m, r in pairs if _granted(r)]
        unsure = [m for m, r in pairs if r is MISSING]
        if took:
            await self._give_back(att, queue, took, limit)
        if unsure:
            self.context.start_soon(self._give_back, att, queue, unsure, self.options.timeout)
        self._need_quorum(replies, "acquire a lock")
        return Turn(None, self._recheck(len(granted), replies))

    async def _give_back(
        self, att: _Attempt, queue: bool, masters: list[_Master], limit: float
    ) -> None:
        if queue and self.options.fair:  # keep the turn: reserved for this waiter
            call = self._script(YIELD, (att.keys.owner,), (att.owner, _ms(CLAIM_WINDOW)))
            await self._round(call, "yield", None, masters, limit=limit)
        else:
            await self._leave(att.keys, att.owner, masters, False, limit=limit)

    def _recheck(self, reserved: int, replies: list[Any]) -> float | None:
        """When the lock may come free on enough masters with no message sent."""
        need = self.quorum - reserved
        ends = sorted(int(r[1]) / 1000 for r in replies if _waiting(r) and r[2] == 0 and r[1] > 0)
        at = (ends[need - 1] if len(ends) >= need else None) if need > 0 else 0.0
        if reserved and self.options.fair:  # renew the reservations before they lapse
            at = min(at if at is not None else math.inf, CLAIM_WINDOW / 2)
        return at

    async def _listen(self, seat: Seat) -> Listening:
        def heard(results: list[Any]) -> bool:
            return sum(1 for r in results if r in (Listening.ON, Listening.NEW)) >= self.quorum

        states = await self._round(
            lambda m: m.wakeups.listen(seat) if m.wakeups else _down(), None, heard
        )
        if Listening.NEW in states:
            return Listening.NEW
        return Listening.ON if heard(states) else Listening.DOWN

    def _leaver(self, att: _Attempt) -> Action:
        room = self._room

        async def leave() -> None:
            # bounded by the time the caller had left: what cannot be told by then is
            # retried in the background
            left = min(self.options.timeout, max(0.1, att.deadline - self.clock.now()))
            last = room.waiting(att.name) == 0
            await self._leave(att.keys, att.owner, self._masters, last, limit=left)

        return leave

    async def _leave(
        self,
        keys: LockKeys,
        owner: str,
        masters: Sequence[_Master],
        last: bool,
        *,
        limit: float | None = None,
    ) -> list[Any]:
        """Release (or leave the queue) on ``masters``; those that cannot be told now
        are retried in the background."""
        args = (owner, b"1" if last else b"0", self._release_tail)
        replies = await self._round(
            lambda m: self._ex(m).evalsha(RELEASE, (keys.encoded,), args),
            "release",
            None,
            masters,
            limit=limit,
        )
        for m, r in zip(masters, replies, strict=True):
            if r is MISSING or isinstance(r, BaseException):

                async def again(m: _Master = m) -> None:
                    await self._ex(m).evalsha(RELEASE, (keys.encoded,), args)

                self.context.cleanup.defer(f"release {keys.base} on a master", again)
        return replies

    # -- the other primitives --------------------------------------------------------

    async def release(self, name: str, owner: str) -> bool:
        replies = await self._leave(self.keys(name), owner, self._masters, False)
        if any(r == 1 or isinstance(r, list) for r in replies):
            return True
        if sum(1 for r in replies if r == 0) >= self.quorum:
            return False
        self._need_quorum(replies, f"release lock {name!r}")
        return False

    async def extend(self, name: str, owner: str, *, ttl: float) -> bool:
        return (await self.extend_many([Renewal(name, owner, ttl)]))[0] is True

    async def extend_many(self, renewals: Sequence[Renewal]) -> list[bool | BaseException]:
        results: list[bool | BaseException] = []
        for i in range(0, len(renewals), BATCH):
            chunk = renewals[i : i + BATCH]
            keys = [self.keys(r.name).owner for r in chunk]
            args: list[Arg] = [r.owner for r in chunk]
            args += [_ms(r.ttl) for r in chunk]
            replies = await self._round(self._script(EXTEND, keys, args), "extend", None)
            for j, r in enumerate(chunk):
                yes = sum(1 for x in replies if isinstance(x, list) and x[j] == 1)
                no = sum(1 for x in replies if isinstance(x, list) and x[j] == 0)
                if yes >= self.quorum:
                    results.append(True)
                elif no > len(self._masters) - self.quorum:
                    results.append(False)
                else:
                    results.append(
                        BackendUnavailable(
                            f"only {yes} of {len(self._masters)} Redlock masters renewed "
                            f"{r.name!r} ({self.quorum} needed)"
                        )
                    )
        return results

    async def inspect(self, name: str) -> LockInfo:
        keys = self.keys(name)
        replies = await self._round(
            lambda m: self._ex(m).evalsha(
                INSPECT,
                [keys.owner, keys.fence, keys.queue, keys.liveness, keys.record],
                [INSPECT_QUEUE],
            ),
            "inspect",
            None,
        )
        self._need_quorum(replies, f"inspect lock {name!r}")
        answers = [r for r in replies if isinstance(r, list)]
        owners = collections.Counter(
            (r[0].decode() if isinstance(r[0], bytes) else str(r[0])).lstrip("~")
            for r in answers
            if r[0]
        )
        holder = None
        if owners:
            owner, _ = owners.most_common(1)[0]
            mine = [r for r in answers if r[0] and r[0].decode().lstrip("~") == owner]
            pttls = sorted((int(r[1]) for r in mine if int(r[1]) >= 0), reverse=True)
            left = pttls[min(len(pttls), self.quorum) - 1] / 1000 if pttls else None
            record = next(filter(None, (inspect_records(r, owner)[0] for r in mine)), None)
            holder = HolderInfo(owner, max(int(r[2] or 0) for r in mine), left, record)
        # every master orders the same waiters the same way: the longest queue shows them
        longest = max(answers, key=lambda r: int(r[3]), default=None)
        queue = inspect_records(longest, None)[1] if longest is not None else ()
        return LockInfo(name, holder, max((int(r[3]) for r in answers), default=0), queue)

    async def list_names(self, prefix: str = "") -> list[str]:
        """The names found on the masters that answer (a majority must)."""
        pattern, name_of = name_scan(self.options.prefix, prefix)
        replies = await self._round(lambda m: self._ex(m).scan(pattern), "list", None)
        self._need_quorum(replies, "list lock names")
        names = {name_of(k) for r in replies if isinstance(r, list) for k in r}
        return sorted(n for n in names if n is not None)

    async def force_release(self, name: str) -> int | None:
        """Releases on every master for the holder a majority names (and only for it)."""
        info = await self.inspect(name)
        if info.holder is None or not await self.release(name, info.holder.owner):
            return None
        return info.holder.token

    async def _keep_queue_alive(self) -> None:
        """While this client has waiters, refresh their queue entries on every master."""
        room, lease_ms = self._room, _ms(QUEUE_LEASE)
        while True:
            await room.wait_for_waiters()
            await anyio.sleep(QUEUE_LEASE / 3)
            names = room.names()
            for i in range(0, len(names), BATCH):
                flat = [k for n in names[i : i + BATCH] for k in self._queue_keys(n)]
                refresh = self._script(REFRESH, flat, [self.client_id, lease_ms])
                await self._round(refresh, "refresh", None)

    def _queue_keys(self, name: str) -> tuple[str, str]:
        keys = self.keys(name)
        return keys.queue, keys.liveness

    def __repr__(self) -> str:
        return f"<RedlockBackend {','.join(str(m.topology) for m in self._masters)}>"


def _granted(reply: Any) -> bool:
    return isinstance(reply, list) and reply[0] == 1


def _waiting(reply: Any) -> bool:
    return isinstance(reply, list) and reply[0] == 0


async def _down() -> Listening:
    return Listening.DOWN
