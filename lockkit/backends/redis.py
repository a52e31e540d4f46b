"""The Redis backend: ``redis://``, ``rediss://``, ``redis+sentinel://``, ``redis+cluster://``.

URL grammar::

    redis://[user[:password]@]host[:port][/db][?option=value...]
    rediss://...                                        (TLS; same grammar)
    redis+sentinel://[user[:password]@]s1[:26379],s2.../service_name[/db]
    redis+cluster://[user[:password]@]n1[:6379],n2...

Options (keyword or query string; keywords win; see
:class:`~lockkit._drivers.redis.options.RedisOptions`):

==================  ========  ===========================================================
``prefix``          lockkit:  prefix of every key and channel
``fair``            true      arrival order with direct handoff; false lets a free lock
                              go to whoever asks first
``timeout``         5         seconds per command
``connect_timeout`` 5         seconds to connect
``wait_replicas``   0         after granting, wait until this many replicas have the grant
                              (not on Cluster or an application's client)
``wait_timeout``    1         seconds for that
``fence_keep``      3600      seconds the last-token key of a name is kept after its last
                              grant: one small key per name used in that time
``sentinel_username`` /       when the Sentinels need their own credentials
``sentinel_password``
``ssl_ca_certs``, ``ssl_cert_reqs``, ``ssl_certfile``, ``ssl_keyfile``   ``rediss://``
==================  ========  ===========================================================

Entering the client connects and sends one ``PING`` (credentials included): a server
that cannot be reached raises :class:`~lockkit.BackendUnavailable` there, refused
credentials :class:`~lockkit.ConfigurationError`.

Layout: a lock named N lives in keys ``{prefix}{N'}:o`` (owner, with the lease as PX),
``:f`` (last token), ``:q`` (queue), ``:l`` (liveness of queued clients, and each
waiter's owner record) and ``:h`` (the holder's owner id and owner record: host, pid,
task, since, for operators), where N' is N with ``%``, ``{`` and ``}`` percent-encoded:
all keys of a lock share one Cluster slot and no two names share keys. Only ``:f``
outlives the lock, for ``fence_keep`` (``:h`` too when its holder dies without releasing).

Tokens: ``max(last token + 1, server TIME in microseconds)``, minted in the same script
that takes the lock. They strictly increase while the last-token key survives; once it
expired (``fence_keep`` after the last grant) or was lost (failover to a replica that
missed it, restart without persistence) they still increase, because the server's clock
moved on by more than the tokens did, unless the clock of the server now answering is
behind the one that minted the last token. ``wait_replicas`` narrows the failover window
further. A guard refuses an equal token from another acquisition, so even that case
cannot go unnoticed there.

Waiting: an acquisition that finds the lock taken joins the queue (the same script, one
round trip; a free lock costs that one round trip and nothing else) and waits for a
message: on its client's channel, or on Cluster on a sharded channel per contended lock
in the lock's slot. A release grants the lock to the oldest live waiter outright and
wakes only that one, the message carrying its token (one command per handoff); the
waiter's lease counts from its last ask the server answered "not granted", and when
that ask is more than a third of the ttl old it asks again instead (restarting the lease
on the server). With ``wait_replicas`` the lock is reserved and claimed instead. The
head waiter also wakes when the holder's lease would end, and every waiter re-checks
after a pub/sub reconnect, so a lost message costs a bounded delay, not a hang. Each
client keeps its queue entries alive with one command per second per contended lock (per
slot on Cluster); entries of a client that died are skipped after 3 s. A waiter rides out
an unreachable Redis (a restart, a failover) for up to ``max(10, 3 * timeout)`` seconds
while its timeout allows, and leaves nothing behind when it gives up or is cancelled.
A leave that never took effect (a failover dropped it, or it was given up during an
outage) leaves an entry that looks alive while its client waits on the lock; when the
lock is handed to it, or found free behind it, its client is woken for a wait it no
longer has and takes such entries out of its queues (``sweep.lua``) within a round trip.

Failover (Sentinel, Cluster): the client follows the new primary. Locks held on the old
primary may be lost (asynchronous replication): holders then learn it at their next
renewal (``LockLostError``); tokens minted on the new primary stay above the old ones as
long as its clock is not behind. With Sentinel the client uses a primary only when a
quorum of the Sentinels names it (a resumed, demoted primary that still answers as
master is refused), listens to ``+switch-master`` on every Sentinel (and asks again
every second), and on a switch drops its connection to the old primary and renews every
lease on the new one at once: a lease the new primary does not confirm within 1 s is
lost (``LockLostError``).

.. versionadded:: 0.1
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, final

import anyio
from redis.asyncio import Redis, RedisCluster

from .._core._backend import (
    Action,
    Backend,
    BackendContext,
    BackendStatistics,
    Capability,
    Claim,
    CleanupQueue,
    Grant,
    HolderInfo,
    LockInfo,
    Renewal,
    current_task_name,
    owner_record,
    task_field,
)
from .._core._errors import (
    BackendUnavailable,
    ConfigurationError,
    LockError,
    LockUsageError,
    map_errors,
)
from .._core._options import parse_options
from .._core._url import LockURL
from .._core._waiting import Listening, Seat, Turn, WaitRoom, wait_turn
from .._drivers.redis.errors import DRIVER_ERRORS, REDIS_ERRORS, driver_error
from .._drivers.redis.options import (
    RedisLockOptions,
    RedisOptions,
    connect_options,
    topology_from_url,
)
from .._drivers.redis.resp import Arg, ConnectOptions, Encoded, Script
from .._drivers.redis.scripts import (
    ACQUIRE,
    EXTEND,
    INSPECT,
    REFRESH,
    RELEASE,
    SWEEP,
    LockKeys,
    inspect_records,
    name_scan,
    text,
)
from .._drivers.redis.topology import AppClient, Executor, Topology
from .._drivers.redis.wakeups import Listen, Wakeups

__all__ = ("RedisBackend",)

logger = logging.getLogger("lockkit.redis")

#: Queue entries of a client that stopped refreshing them are skipped after this.
QUEUE_LEASE = 3.0
#: A lock handed to a waiter stays reserved for it this long.
CLAIM_WINDOW = 2.0
#: Leases renewed (or queue entries refreshed) per script call.
BATCH = 500
#: Queue entries :meth:`RedisBackend.inspect` lists.
INSPECT_QUEUE = 100
#: A queue entry younger than this is never taken for one whose waiter is gone.
STRAY_AGE = 1.0
#: Sweeps for ended waits (see :meth:`RedisBackend._on_stray`) run at most this often.
SWEEP_EVERY = 0.5


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


@final
class RedisBackend(Backend):
    """Locks in Redis: one server, a Sentinel-managed primary, or a Cluster.

    Build it from a URL through :func:`lockkit.connect`, or around the application's own
    client with :meth:`from_client`. See the module docstring for the key layout, token
    guarantees and failover behaviour.

    .. versionadded:: 0.1
    """

    kind: ClassVar[str] = "redis"
    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss", "redis+sentinel", "redis+cluster")
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

    def __init__(
        self,
        topology: Topology,
        options: RedisLockOptions = RedisLockOptions(),  # noqa: B008 - frozen
        connect: ConnectOptions = ConnectOptions(),  # noqa: B008 - frozen
    ) -> None:
        if options.wait_replicas and not topology.can_wait:
            raise ConfigurationError(
                "wait_replicas needs lockkit's own connection to one primary (WAIT counts "
                f"the writes of one connection), not a {topology}: use a redis:// or "
                "redis+sentinel:// URL for it"
            )
        self.topology = topology
        self.options = options
        self._connect = connect
        self.client_id = secrets.token_hex(8)
        #: how long a waiter rides out an unreachable Redis (a failover) before raising
        self._outage_grace = max(10.0, 3 * options.timeout)
        self._channel = f"{options.prefix}c:{self.client_id}"
        # a Lua string.format pattern: a '%' of the prefix must be doubled
        channel_format = f"{options.prefix}c:".replace("%", "%%") + "%s"
        # fair mode (see _queue.lua): a release grants the next waiter outright ("2"),
        # except with wait_replicas, where the waiter's own claim must be the write its
        # WAIT counts ("1": reserved, then claimed)
        fair = b"0" if not options.fair else b"1" if options.wait_replicas else b"2"
        wake = topology.wake_kind.value
        # ARGV[4..11] of acquire.lua: no token floor nor queue score (those are Redlock's)
        self._acquire_tail = Encoded(
            self.client_id,
            fair,
            _ms(QUEUE_LEASE),
            _ms(options.fence_keep),
            channel_format,
            wake,
            b"",
            b"",
        )
        self._release_tail = Encoded(
            self.client_id, _ms(CLAIM_WINDOW), fair, channel_format, wake, _ms(options.fence_keep)
        )
        self._keys: dict[str, LockKeys] = {}
        self._requests: collections.Counter[str] = collections.Counter()
        #: owners whose ask (that joins the queue) is in flight
        self._asking: set[str] = set()
        #: owners of wake-ups that found their waits over, not swept yet
        self._strays: dict[str, None] = {}
        #: owners that claimed a grant by asking before its wake-up came (bounded)
        self._claimed: dict[str, None] = {}
        self._sweeping = False
        self._executor: Executor | None = None
        self._wakeups: Wakeups | None = None
        # set by aopen, for the hot path
        self._room: WaitRoom
        self._listen: Callable[[Seat], Awaitable[Listening]]
        self._cleanup: CleanupQueue

    # -- construction ----------------------------------------------------------------

    @classmethod
    def from_url(cls, url: LockURL, **options: Any) -> RedisBackend:
        opts = parse_options(RedisOptions, cls.kind, url.query, options)
        topology = topology_from_url(url, opts)
        connect = connect_options(opts, url.username, url.password, tls=url.scheme == "rediss")
        return cls(topology, opts, connect)

    @classmethod
    def from_client(cls, client: Redis | RedisCluster, **options: Any) -> RedisBackend:
        """Use the application's ``redis.asyncio.Redis`` or ``RedisCluster``.

        lockkit never closes ``client``; it takes one extra connection for pub/sub (from
        the client's pool, or to one node of a Cluster) and gives it back.

        Args:
            client: the application's client.
            **options: the lock options (``prefix``, ``fair``, ``timeout``,
                ``fence_keep``) as for URLs.
        """
        topology = AppClient(client)
        opts = parse_options(RedisLockOptions, cls.kind, {}, options)
        return cls(topology, opts, ConnectOptions(timeout=opts.timeout))

    @property
    def prefix(self) -> str:
        return self.options.prefix

    # -- lifecycle -------------------------------------------------------------------

    async def aopen(self, ctx: BackendContext) -> None:
        await super().aopen(ctx)
        self._cleanup = ctx.cleanup
        self._executor = executor = self.topology.open(self._connect)
        self._wakeups = wakeups = executor.wakeups(
            Listen(self._channel, self.client_id, self.keys, ctx.start_soon)
        )
        self._room, self._listen = wakeups.room, wakeups.listen
        self._room.on_stray = self._on_stray
        await self.ping()
        ctx.start_soon(self._keep_queue_alive, name="lockkit-redis-queue-keeper")
        # follows failovers where the topology has someone to follow (Sentinel); returns at
        # once elsewhere
        ctx.start_soon(executor.follow, ctx.reconfirm, name="lockkit-redis-follower")

    async def aclose(self) -> None:
        if self._wakeups is not None:
            room = self._wakeups.room
            room.close()  # waits in flight end with LockUsageError...
            await self._wakeups.aclose()
            with anyio.move_on_after(self.options.timeout):
                await room.drained()  # ...after leaving their queues, while we can
        executor, self._executor = self._executor, None
        if executor is not None:
            await executor.aclose()

    async def ping(self) -> None:
        executor = self._open_executor()
        self._requests["ping"] += 1
        with map_errors(REDIS_ERRORS, "ping Redis"):
            await executor.execute("PING")

    def statistics(self) -> BackendStatistics:
        wakeups, ctx = self._wakeups, self._context
        return BackendStatistics(
            dict(self._requests),
            wakeups.room.wakeups if wakeups else 0,
            wakeups.subscriptions if wakeups else 0,
            wakeups.room.waiting() if wakeups else 0,
            ctx.cleanup.pending if ctx else 0,
        )

    # -- plumbing --------------------------------------------------------------------

    def keys(self, name: str) -> LockKeys:
        """The keys that hold lock ``name`` (for tests and operators)."""
        keys = self._keys.get(name)
        if keys is None:
            if len(self._keys) >= 4096:
                self._keys.clear()
            keys = self._keys[name] = LockKeys(self.options.prefix, name)
        return keys

    def _open_executor(self) -> Executor:
        if self._executor is None:
            raise LockUsageError("the Redis backend is not open")
        return self._executor

    async def _eval(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        executor = self._executor
        if executor is None:
            raise LockUsageError("the Redis backend is not open")
        self._requests[script.name] += 1
        try:  # each connection enforces the command timeout itself
            return await executor.evalsha(script, keys, args)
        except DRIVER_ERRORS as exc:  # not map_errors: this is the hot path
            raise driver_error(exc, f"run the {script.name} script") from exc

    async def _publish(self, channel: bytes | str, owner: bytes | str) -> None:
        """Wake a waiter the script named (on Cluster through redis-py only)."""
        self._requests["publish"] += 1
        try:
            with map_errors(REDIS_ERRORS, "wake the next waiter"):
                with anyio.fail_after(self.options.timeout):
                    await self._open_executor().execute("PUBLISH", channel, owner)
        except BackendUnavailable as exc:  # it re-checks when its fallback timer fires
            logger.info("could not wake the next waiter: %s", exc)

    # -- primitives ------------------------------------------------------------------

    async def acquire(self, claim: Claim, *, timeout: float | None) -> Grant:
        if claim.shared or claim.limit != 1:
            raise ConfigurationError("the Redis backend offers exclusive locks only")
        if self._executor is None:
            raise LockUsageError("the Redis backend is not open")
        grant = await wait_turn(
            functools.partial(
                self._try,
                self.keys(claim.name),
                claim.owner,
                _ms(claim.ttl),
                task_field(current_task_name()),
            ),
            name=claim.name,
            owner=claim.owner,
            room=self._room,
            clock=self.clock,
            cleanup=self._cleanup,
            leave=self._leaver(claim),
            timeout=timeout,
            fallback=min(5.0, max(0.5, claim.ttl / 2)),
            outage_grace=self._outage_grace,
            listen=self._listen,
            fresh_for=claim.ttl / 3,
        )
        if self.options.wait_replicas:
            await self._confirm_replicas(claim)
        return grant

    async def _try(self, keys: LockKeys, owner: str, ttl_ms: int, task: str, queue: bool) -> Turn:
        """One ask: take the lock, or (``queue``) join its queue and say when to ask again.
        ``task``: the owner record's task field (see :func:`.owner_record`)."""
        executor = self._executor
        if executor is None:
            raise LockUsageError("the Redis backend is not open")
        self._requests["acquire"] += 1
        if queue:  # a wake-up may come before the reply: not a stray (see _on_stray)
            self._asking.add(owner)
        started = self.clock.now()  # before the request: a late reply only shortens the lease
        try:  # _eval inlined: this is the hottest call of all
            reply = await executor.evalsha(
                ACQUIRE,
                (keys.encoded,),
                (
                    owner,
                    ttl_ms,
                    b"1" if queue else b"0",
                    self._acquire_tail,
                    owner_record(field=task, lease_ms=ttl_ms),
                ),
            )
        except DRIVER_ERRORS as exc:
            raise driver_error(exc, "run the acquire script") from exc
        finally:
            self._asking.discard(owner)
        if reply[0] == 1:
            if len(reply) > 2:  # granted outright earlier: a wake-up may still be coming
                claimed = self._claimed
                if len(claimed) >= 1024:
                    claimed.pop(next(iter(claimed)))
                claimed[owner] = None
            return Turn(Grant(int(reply[1]), started))
        if len(reply) > 4:
            await self._publish(reply[4], reply[5])
        pttl, rank = int(reply[1]), int(reply[2])
        return Turn(None, pttl / 1000 if rank == 0 and pttl > 0 else None, int(reply[3]))

    def _leaver(self, claim: Claim) -> Action:
        """Leave the queue or give the lock back (whichever the server has), dropping
        this client's liveness entry when no other local waiter is left on the name."""
        room, keys = self._room, self.keys(claim.name)

        async def leave() -> None:
            await self._leave(keys, claim.owner, last=room.waiting(claim.name) == 0)

        return leave

    async def _confirm_replicas(self, claim: Claim) -> None:
        """Wait until ``wait_replicas`` replicas have the grant; release it otherwise."""
        wanted, ms = self.options.wait_replicas, _ms(self.options.wait_timeout)
        try:
            with map_errors(REDIS_ERRORS, "wait for replicas"):
                acked = int(await self._open_executor().execute("WAIT", wanted, ms))
            if acked < wanted:
                raise BackendUnavailable(
                    f"only {acked} of {wanted} replicas confirmed the grant within "
                    f"{self.options.wait_timeout:g}s; the lock was released again"
                )
        except BaseException:
            await self._cleanup.run(f"release lock {claim.name!r}", self._leaver(claim))
            raise

    async def _leave(self, keys: LockKeys, owner: str, *, last: bool) -> bool:
        """Release, or leave the queue; ``last``: this client has no other waiter here."""
        reply = await self._eval(
            RELEASE, (keys.encoded,), (owner, b"1" if last else b"0", self._release_tail)
        )
        if isinstance(reply, list):
            await self._publish(reply[0], reply[1])
            return True
        return bool(reply)

    async def release(self, name: str, owner: str) -> bool:
        return await self._leave(self.keys(name), owner, last=False)

    async def extend(self, name: str, owner: str, *, ttl: float) -> bool:
        reply = await self._eval(EXTEND, [self.keys(name).owner], [owner, _ms(ttl)])
        return bool(reply[0])

    async def extend_many(self, renewals: Sequence[Renewal]) -> list[bool | BaseException]:
        groups: dict[int | None, list[int]] = {}
        for i, r in enumerate(renewals):
            groups.setdefault(self.topology.group_of(self.keys(r.name).owner), []).append(i)
        chunks = [idx[i : i + BATCH] for idx in groups.values() for i in range(0, len(idx), BATCH)]
        results: list[bool | BaseException] = [False] * len(renewals)

        async def run(chunk: list[int]) -> None:
            keys = [self.keys(renewals[i].name).owner for i in chunk]
            args: list[Arg] = [renewals[i].owner for i in chunk]
            args += [_ms(renewals[i].ttl) for i in chunk]
            try:
                reply = await self._eval(EXTEND, keys, args)
            except Exception as exc:
                for i in chunk:
                    results[i] = exc
                return
            for i, ok in zip(chunk, reply, strict=True):
                results[i] = bool(ok)

        async with anyio.create_task_group() as tg:
            for chunk in chunks:
                tg.start_soon(run, chunk)
        return results

    async def inspect(self, name: str) -> LockInfo:
        keys = self.keys(name)
        reply = await self._eval(
            INSPECT,
            [keys.owner, keys.fence, keys.queue, keys.liveness, keys.record],
            [INSPECT_QUEUE],
        )
        value, pttl, token, queued = reply[:4]
        owner = text(value).lstrip("~") if value else None
        record, waiters = inspect_records(reply, owner)
        holder = None
        if owner is not None:
            expires = pttl / 1000 if pttl >= 0 else None
            holder = HolderInfo(owner, int(token or 0), expires, record)
        return LockInfo(name, holder, int(queued), waiters)

    async def list_names(self, prefix: str = "") -> list[str]:
        executor = self._open_executor()
        pattern, name_of = name_scan(self.options.prefix, prefix)
        self._requests["scan"] += 1
        with map_errors(REDIS_ERRORS, "list lock names"):
            keys = await executor.scan(pattern)
        return sorted({n for n in map(name_of, keys) if n is not None})

    async def force_release(self, name: str) -> int | None:
        """Reads the holder, then releases for it (handing the lock to the next waiter):
        if the holder changed in between, the release names the old one and does
        nothing, so only the holder that was read is ever broken."""
        keys = self.keys(name)
        value, _, token, _ = await self._eval(INSPECT, [keys.owner, keys.fence, keys.queue], [])
        if not value:
            return None
        if not await self._leave(keys, text(value).lstrip("~"), last=False):
            return None
        return int(token or 0)

    async def _keep_queue_alive(self) -> None:
        """While this client has waiters, refresh their queue entries once a second:
        one script per slot (per BATCH locks) for all the locks they wait on."""
        assert self._wakeups is not None
        room, lease_ms = self._wakeups.room, _ms(QUEUE_LEASE)
        while True:
            await room.wait_for_waiters()
            await anyio.sleep(QUEUE_LEASE / 3)
            groups: dict[int | None, list[LockKeys]] = {}
            for name in room.names():
                keys = self.keys(name)
                groups.setdefault(self.topology.group_of(keys.owner), []).append(keys)
            for members in groups.values():
                for i in range(0, len(members), BATCH):
                    flat = [
                        k for keys in members[i : i + BATCH] for k in (keys.queue, keys.liveness)
                    ]
                    try:
                        await self._eval(REFRESH, flat, [self.client_id, lease_ms])
                    except LockError as exc:
                        logger.info("could not refresh queue entries: %s", exc)

    def _on_stray(self, owner: str) -> None:
        """A wake-up found no waiter here and none is asking: the wait of ``owner`` is
        over, yet the server still had it in line. Its leave never took effect: a
        failover dropped it (replication is asynchronous) or it was given up during an
        outage. Liveness is per client, so while this client waits on that lock the
        entry looks alive and the waiters behind it (or a lock handed to it) would wait
        for it. Sweep this client's queues: drop its entries whose waits are over."""
        if owner in self._asking or owner in self._claimed:
            return  # woken before the reply to its ask arrived, or after it claimed
        self._strays[owner] = None
        if not self._sweeping and self._context is not None:
            self._sweeping = True
            self._context.start_soon(self._sweep_strays, name="lockkit-redis-sweep")

    async def _sweep_strays(self) -> None:
        assert self._wakeups is not None
        room = self._wakeups.room
        try:
            while self._strays:
                gone = set(self._strays)
                self._strays.clear()
                room.forget(gone)
                await self._sweep(gone)
                await anyio.sleep(SWEEP_EVERY)
        finally:
            self._sweeping = False

    async def _sweep(self, gone: set[str]) -> None:
        """Take out this client's queue entries whose waits are over (older than
        STRAY_AGE, on every lock it waits on), and any lock handed to one of ``gone``."""
        assert self._wakeups is not None
        room = self._wakeups.room
        for name in room.names():
            owners = room.owners(name)
            try:
                reply = await self._eval(
                    SWEEP,
                    (self.keys(name).encoded,),
                    (self._release_tail, _ms(STRAY_AGE), len(owners), *owners, *gone),
                )
            except LockError as exc:
                logger.info("could not sweep the queue of %r: %s", name, exc)
                continue
            if reply[0]:
                logger.info("took %d ended wait(s) out of the queue of %r", reply[0], name)
            if len(reply) > 1:
                await self._publish(reply[1], reply[2])

    def __repr__(self) -> str:
        return f"<RedisBackend {self.topology}>"
