"""The etcd backend: ``etcd://`` (``etcds://`` for TLS).

URL grammar::

    etcd://[user:password@]host[:2379][,host[:2379]...][?option=value...]
    etcds://...?ssl_ca_certs=ca.pem[&ssl_certfile=client.pem&ssl_keyfile=client-key.pem]

Options (keyword or query string; keywords win; see
:class:`~lockkit._drivers.etcd.EtcdOptions`):

===================  ==========  ==========================================================
``root``             lockkit     key prefix: lock ``N`` keeps its keys under ``{root}/{N}/``
``lease_ttl``        10          seconds of the client's lease (whole, 2 or more)
``timeout``          5           seconds per request
``connect_timeout``  10          seconds to reach a member and get the lease
``ssl_*``                        ``etcds://`` only: CA bundle, client certificate and key
===================  ==========  ==========================================================

With ``user:password`` the client authenticates and sends its token with every call,
authenticating again when a member has forgotten it.

Layout (Go's ``concurrency.Mutex``): each client holds one lease, kept alive over one
stream. An acquisition of lock ``N`` puts the key ``{root}/{N}/{lease id in hex}`` on
that lease, in one transaction that also reads the two newest keys of the prefix; the
key with the lowest create revision holds, and a waiter watches only the deletion of
the key created just before its own (no herd, FIFO). Other tasks of the same client
that queue for the same name at the same time add ``.{n}`` to the key. ``N`` is the
name with every character outside ``[A-Za-z0-9-_.:~]`` %-encoded, so ``a`` and ``a/b``
are separate prefixes and no name escapes the root. ``etcdctl lock {root}/{N}`` and a
Go service's ``concurrency.NewMutex(session, "{root}/{N}")`` use the same keys, so
they and lockkit exclude each other.

Tokens: the holder key's create revision. Revisions are global and rise with every
write, so tokens rise from one holder to the next.

Waiting: the waiter watches the key ahead of it from the revision it saw it at, on
the client's one watch stream. A broken stream resumes each watch from the revision
after the last it saw; a watch the server cancels because that revision was compacted
makes the waiter read the queue again and watch from a current revision. When the key
ahead belongs to this client no watch is needed: deleting it wakes the waiter, and a
releasing holder hands the lock over in the same transaction that deletes its key.
A cancelled or timed-out waiter deletes its key (shielded, retried).

Leases and loss: a hold is lost when the client's lease is (the keep-alive stream says
it is gone, or no keep-alive was confirmed within its ttl: the safe deadline is the
send time of the last confirmed keep-alive + ttl - 10 %), when its key is deleted by
someone else (each held key is watched), or when its holder stops renewing within the
lock's ttl (the client then deletes the key itself). The body of ``async with`` is
cancelled and :class:`~lockkit.LockLostError` raised. A waiter granted after a long
wait has its key (and so its lease) read again in the request that grants it.

A crashed process's locks stay taken until its lease expires, up to ``lease_ttl``
seconds after its last keep-alive. etcd gives every lease its full ttl again when a
new leader is elected (etcd issue #9395), so each leader change during that time can
add up to ``lease_ttl`` more.

.. versionadded:: 0.1
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import math
from collections.abc import Sequence
from typing import Any, ClassVar, final

import anyio
import grpc.aio
from etcetra.grpc_api import rpc_pb2

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
    OwnerRecord,
    Renewal,
    WaiterInfo,
    current_task_name,
    owner_record,
    task_field,
)
from .._core._errors import BackendUnavailable, ConfigurationError, LockError, LockUsageError
from .._core._options import option_names, parse_options
from .._core._url import LockURL
from .._core._waiting import Listening, Seat, Turn, WaitRoom, wait_turn
from .._drivers import etcd
from .._drivers.etcd import (
    ASCEND,
    DESCEND,
    EtcdClientP,
    EtcdLockOptions,
    EtcdOptions,
    KeepAlive,
    Link,
    Watcher,
    created_at,
    op_delete,
    op_put,
    op_range,
    prefix_end,
    txn,
)

__all__ = ("EtcdBackend",)

logger = logging.getLogger("lockkit.etcd")

#: The lease's safe deadline keeps this fraction of its ttl in reserve.
LEASE_MARGIN = 0.1
#: A held key is watched for deletion from this many seconds after the grant (the
#: watch starts at the key's creation, so a deletion before then is still heard).
WATCH_DELAY = 0.05
_TLS_OPTIONS = frozenset(("ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile"))


#: Waiters :meth:`EtcdBackend.inspect` lists (with their owner records).
INSPECT_QUEUE = 100


def _value(entry: _Entry) -> bytes:
    """The value of an acquisition's key: its owner id, a newline, its owner record."""
    return f"{entry.owner}\n{owner_record(field=entry.task)}".encode()


def _parse_value(value: bytes, suffix: bytes) -> tuple[str, OwnerRecord | None]:
    """Owner id and owner record of a key's value; a value of Go's mutex or etcdctl
    (empty) names the owner by the key's suffix (its lease)."""
    owner, _, record = value.partition(b"\n")
    text = owner.decode(errors="replace") or suffix.decode(errors="replace")
    return text, OwnerRecord.decode(record)


@dataclasses.dataclass(slots=True, eq=False)
class _Entry:
    """One acquisition of this client: its key, its place in the queue, its hold."""

    name: str
    owner: str
    prefix: bytes
    ttl: float
    key: bytes = b""
    slot: int = -1
    lease: int = 0
    #: the key's create revision (0: not created, or gone)
    rev: int = 0
    #: the owner record's task field (see :func:`owner_record`)
    task: str = "null"
    #: the key ahead of ours and the revision it was seen at (while waiting)
    ahead: bytes | None = None
    seen: int = 0
    #: the holder ahead of us, in this client, let go in the same request
    handed: Grant | None = None
    held: bool = False
    releasing: bool = False
    expires: float = math.inf
    #: the watch on our own key while held, and when the keeper should set it
    watch: int | None = None
    watch_at: float = math.inf
    #: the revision that watch starts at (0: the current one, after a compaction)
    watch_from: int = 0


@dataclasses.dataclass(slots=True, eq=False)
class _Shared:
    """One watch on a key ahead, shared by this client's waiters behind it."""

    ident: int
    owners: set[str]


@final
class EtcdBackend(Backend):
    """Locks in etcd. See the module docstring for layout, tokens and leases.

    .. versionadded:: 0.1
    """

    kind: ClassVar[str] = "etcd"
    schemes: ClassVar[tuple[str, ...]] = ("etcd", "etcds")
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
        client: EtcdClientP | None,
        options: EtcdLockOptions = EtcdLockOptions(),  # noqa: B008 - frozen
        *,
        url: LockURL | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self.options = options
        self._client = client
        self._url = url
        self._connect_timeout = connect_timeout
        self._channel: grpc.aio.Channel | None = None
        self._link: Link | None = None
        self._ka: KeepAlive | None = None
        self._watcher: Watcher | None = None
        self._room = WaitRoom()
        self._entries: dict[str, _Entry] = {}  # by owner
        self._by_key: dict[bytes, _Entry] = {}
        self._behind: dict[bytes, dict[str, _Entry]] = {}  # key -> our waiters right behind
        self._watches: dict[bytes, _Shared] = {}  # key ahead -> its shared watch
        self._slots: dict[bytes, set[int]] = {}  # prefix -> slots in use
        self._requests: collections.Counter[str] = collections.Counter()
        self._poke = anyio.Event()
        self._next_wake = -math.inf
        self._scope: anyio.CancelScope | None = None
        self._stopped = anyio.Event()

    # -- construction ----------------------------------------------------------------

    @classmethod
    def from_url(cls, url: LockURL, **options: Any) -> EtcdBackend:
        given = {*url.query, *options}
        if url.scheme == "etcd" and given & _TLS_OPTIONS:
            raise ConfigurationError("TLS options need an etcds:// URL")
        if url.path not in ("", "/"):
            raise ConfigurationError(
                f"an {url.scheme}:// URL has no path; put the key prefix in the 'root' option"
            )
        opts = parse_options(EtcdOptions, cls.kind, url.query, options)
        if not url.hosts:
            raise ConfigurationError(f"a {url.scheme}:// URL needs at least one host")
        etcd.credentials_of(url)  # fail fast on half credentials
        if url.scheme == "etcds":
            etcd.tls_credentials(opts.tls)  # fail fast on unreadable files
        return cls(None, opts, url=url, connect_timeout=opts.connect_timeout)

    @classmethod
    def from_client(cls, client: EtcdClientP, **options: Any) -> EtcdBackend:
        """Use the application's etcetra connection (an ``EtcdCommunicator``, as
        ``EtcdClient.connect()`` yields it). lockkit never closes it; it grants its own
        lease on it and revokes that lease when the lock client closes.

        Args:
            client: the application's connection.
            **options: the lock options (``root``, ``timeout``, ``lease_ttl``).
        """
        allowed = set(option_names(EtcdLockOptions))
        opts = parse_options(EtcdLockOptions, cls.kind, {}, options, allowed=allowed)
        return cls(client, opts)

    def prefix(self, name: str) -> bytes:
        """The key prefix of lock ``name``'s acquisitions."""
        return etcd.lock_prefix(self.options.root, name)

    # -- lifecycle -------------------------------------------------------------------

    async def aopen(self, ctx: BackendContext) -> None:
        await super().aopen(ctx)
        try:
            with anyio.fail_after(self._connect_timeout):
                client = self._client
                credentials = None
                if client is None:
                    assert self._url is not None
                    tls = self.options.tls if isinstance(self.options, EtcdOptions) else None
                    self._channel = await etcd.open_channel(
                        self._url, tls if self._url.scheme == "etcds" else None
                    )
                    client = etcd.communicator(self._channel)
                    credentials = etcd.credentials_of(self._url)
                link = Link(client, timeout=self.options.timeout, credentials=credentials)
                await link.authenticate()
                # a lease needs no permission: read the lock prefix, so a client that
                # may not use it is refused here, not at its first lock
                root = f"{self.options.root}/".encode() if self.options.root else b""
                self._requests["txn"] += 1
                await link.txn(
                    txn((), (op_range(root, prefix_end(root), limit=1, count_only=True),)),
                    "read the lock prefix",
                )
                self._link = link
                self._ka = await self._grant(link)  # the one round trip that verifies
        except TimeoutError:
            await self._close_channel()
            raise BackendUnavailable(
                f"no etcd member answered within {self._connect_timeout}s"
            ) from None
        except BackendUnavailable as exc:
            await self._close_channel()
            scheme = self._url.scheme if self._url is not None else ""
            better = etcd.tls_refusal(exc.__cause__, scheme)
            if better is not None:
                raise better from None
            raise
        except BaseException:
            await self._close_channel()
            raise
        self._watcher = Watcher(link)
        ctx.start_soon(self._run, name="lockkit-etcd")

    async def _grant(self, link: Link) -> KeepAlive:
        started = self.clock.now()
        self._requests["lease_grant"] += 1
        ttl = self.options.lease_ttl
        reply = await link.call(
            link.lease.LeaseGrant, rpc_pb2.LeaseGrantRequest(TTL=ttl), "grant a lease"
        )
        ka = KeepAlive(
            link, self.clock, reply.ID, reply.TTL, started, margin=reply.TTL * LEASE_MARGIN
        )
        ka.on_change = self._wake_keeper
        return ka

    async def _run(self) -> None:
        try:
            with anyio.CancelScope() as self._scope:
                async with anyio.create_task_group() as tg:
                    assert self._watcher is not None
                    tg.start_soon(self._watcher.run)
                    tg.start_soon(self._keep)
        finally:
            self._stopped.set()

    async def aclose(self) -> None:
        room = self._room
        room.close()  # waits in flight end with LockUsageError, after leaving the queue
        with anyio.move_on_after(self.options.timeout):
            await room.drained()
        if self._scope is not None:
            self._scope.cancel()
            with anyio.CancelScope(shield=True):
                await self._stopped.wait()
        link, ka = self._link, self._ka
        self._link = None
        if link is not None and ka is not None and not ka.gone:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.options.timeout):
                try:  # deletes every key of ours with it
                    await link.call(
                        link.lease.LeaseRevoke,
                        rpc_pb2.LeaseRevokeRequest(ID=ka.lease),
                        "revoke the lease",
                    )
                except LockError as exc:
                    logger.info("could not revoke the etcd lease, it will expire: %s", exc)
        await self._close_channel()

    async def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            with anyio.CancelScope(shield=True):
                await channel.close()

    async def ping(self) -> None:
        link = self._open()
        self._requests["range"] += 1
        await link.txn(txn((), [op_range(b"\0", count_only=True)]), "ping etcd")

    def statistics(self) -> BackendStatistics:
        ctx = self._context
        return BackendStatistics(
            dict(self._requests),
            self._room.wakeups,
            self._watcher.created if self._watcher is not None else 0,
            self._room.waiting(),
            ctx.cleanup.pending if ctx else 0,
        )

    @property
    def lease_id(self) -> int | None:
        """The id of the client's lease (None before it is open)."""
        return self._ka.lease if self._ka is not None else None

    def _open(self) -> Link:
        if self._link is None:
            raise LockUsageError("the etcd backend is not open")
        return self._link

    # -- acquiring -------------------------------------------------------------------

    async def acquire(self, claim: Claim, *, timeout: float | None) -> Grant:
        if not claim.exclusive:
            raise ConfigurationError("the etcd backend offers exclusive locks only")
        self._open()
        if claim.owner in self._entries:
            raise LockUsageError(f"owner id {claim.owner!r} is already in use")
        entry = _Entry(claim.name, claim.owner, self.prefix(claim.name), claim.ttl)
        entry.task = task_field(current_task_name())
        self._entries[claim.owner] = entry
        try:
            return await wait_turn(
                functools.partial(self._try, entry),
                name=claim.name,
                owner=claim.owner,
                room=self._room,
                clock=self.clock,
                cleanup=self.context.cleanup,
                leave=self._leaver(entry),
                timeout=timeout,
                fallback=min(5.0, max(0.5, claim.ttl / 2)),
                outage_grace=max(10.0, 3 * self.options.timeout),
                listen=self._listen,
            )
        finally:
            if not entry.held:  # a cleanup still pending keeps the key and its slot
                self._forget(entry)

    async def _try(self, entry: _Entry, queue: bool) -> Turn:
        """One look: take the lock if no key is older than ours, else note the one ahead."""
        link = self._open()
        if entry.handed is not None:  # the holder ahead of us, in this client, let go
            return Turn(self._take(entry, entry.handed))
        started = self.clock.now()
        if not queue:
            return Turn(await self._try_free(link, entry, started))
        ka = self._lease()
        if entry.rev == 0 or entry.lease != ka.lease:
            return await self._create(link, entry, ka, started)
        self._requests["txn"] += 1
        reply = await link.txn(
            txn(
                (),
                (
                    op_range(
                        entry.prefix,
                        prefix_end(entry.prefix),
                        limit=1,
                        order=DESCEND,
                        max_create=entry.rev - 1,
                    ),
                    op_range(entry.key),
                ),
            ),
            "look at a lock's queue",
        )
        ahead = reply.responses[0].response_range.kvs
        mine = reply.responses[1].response_range.kvs
        if not mine or mine[0].create_revision != entry.rev:  # our key is gone: queue again
            self._unlink(entry)
            return await self._create(link, entry, ka, self.clock.now())
        if not ahead:
            return Turn(self._take(entry, Grant(entry.rev, started)))
        self._queue_behind(entry, ahead[0].key, reply.header.revision)
        return Turn()

    def _lease(self) -> KeepAlive:
        ka = self._ka
        if ka is None or ka.gone:
            raise BackendUnavailable("the etcd lease is being replaced")
        return ka

    def _assign(self, entry: _Entry, lease: int) -> None:
        """Give ``entry`` its key: a slot no other acquisition of ours uses on its name."""
        if entry.slot < 0:
            used = self._slots.setdefault(entry.prefix, set())
            slot = 0
            while slot in used:
                slot += 1
            used.add(slot)
            entry.slot = slot
        entry.lease = lease
        entry.key = etcd.key_of(entry.prefix, lease, entry.slot)
        self._by_key[entry.key] = entry

    def _free_slot(self, entry: _Entry) -> None:
        used = self._slots.get(entry.prefix)
        if used is not None and entry.slot >= 0:
            used.discard(entry.slot)
            if not used:
                del self._slots[entry.prefix]
        entry.slot = -1

    async def _try_free(self, link: Link, entry: _Entry, started: float) -> Grant | None:
        """``timeout=0``: put our key only if the prefix is empty (one transaction)."""
        ka = self._lease()
        self._assign(entry, ka.lease)
        self._requests["txn"] += 1
        reply = await link.txn(
            txn(
                (created_at(entry.prefix, 0, end=prefix_end(entry.prefix)),),
                (op_put(entry.key, _value(entry), ka.lease),),
            ),
            "try a lock",
        )
        if not reply.succeeded:
            self._unlink(entry)
            self._free_slot(entry)
            return None
        entry.rev = reply.header.revision
        return self._take(entry, Grant(entry.rev, started))

    async def _create(self, link: Link, entry: _Entry, ka: KeepAlive, started: float) -> Turn:
        """Put our key (unless it is there already, from a request whose reply was lost)
        and read the key just ahead of it, in one transaction."""
        self._assign(entry, ka.lease)
        end = prefix_end(entry.prefix)
        self._requests["txn"] += 1
        reply = await link.txn(
            txn(
                (created_at(entry.key, 0),),
                (
                    op_put(entry.key, _value(entry), ka.lease),
                    op_range(entry.prefix, end, limit=2, order=DESCEND),
                ),
                (op_range(entry.key),),
            ),
            "queue for a lock",
        )
        if not reply.succeeded:  # ours already: a lost reply; look at the queue
            entry.rev = reply.responses[0].response_range.kvs[0].create_revision
            return await self._try(entry, True)
        entry.rev = reply.header.revision
        newest = reply.responses[1].response_range.kvs  # ours, then the one ahead
        if len(newest) < 2:
            return Turn(self._take(entry, Grant(entry.rev, started)))
        self._queue_behind(entry, newest[1].key, reply.header.revision)
        return Turn()

    def _take(self, entry: _Entry, grant: Grant) -> Grant:
        entry.held = True
        entry.handed = None
        entry.expires = grant.started + entry.ttl
        self._queue_behind(entry, None, 0)
        # someone else deleting our key ends the hold: the keeper watches it from the
        # revision after its creation, a moment later (a short hold never needs it)
        entry.watch_at = grant.started + WATCH_DELAY
        entry.watch_from = entry.rev + 1
        if entry.watch_at < self._next_wake:  # the keeper must look sooner
            self._wake_keeper()
        return grant

    def _queue_behind(self, entry: _Entry, ahead: bytes | None, seen: int) -> None:
        if entry.ahead is not None:
            peers = self._behind.get(entry.ahead)
            if peers is not None and peers.pop(entry.owner, None) is not None and not peers:
                del self._behind[entry.ahead]
        entry.ahead, entry.seen = ahead, seen
        if ahead is not None:
            self._behind.setdefault(ahead, {})[entry.owner] = entry

    def _unlink(self, entry: _Entry) -> None:
        """Forget ``entry``'s key (it is gone, or never was)."""
        self._queue_behind(entry, None, 0)
        self._unwatch_own(entry)
        if self._by_key.get(entry.key) is entry:
            del self._by_key[entry.key]
        entry.rev = 0

    def _forget(self, entry: _Entry) -> None:
        self._queue_behind(entry, None, 0)
        self._unwatch_own(entry)
        if self._entries.get(entry.owner) is entry:
            del self._entries[entry.owner]
        if self._by_key.get(entry.key) is entry:
            del self._by_key[entry.key]

    def _unwatch_own(self, entry: _Entry) -> None:
        if entry.watch is not None and self._watcher is not None:
            self._watcher.remove(entry.watch)
        entry.watch = None

    # -- waiting -----------------------------------------------------------------------

    async def _listen(self, seat: Seat) -> Listening:
        entry = self._entries.get(seat.owner)
        if entry is None or entry.handed is not None or entry.ahead is None:
            return Listening.NEW
        ahead = entry.ahead
        if ahead in self._by_key:  # ours: deleting it wakes this waiter
            return Listening.ON
        shared = self._watches.get(ahead)
        if shared is not None:
            shared.owners.add(seat.owner)
            return Listening.ON
        watcher = self._watcher
        ident = None
        if watcher is not None:
            ident = watcher.add(ahead, entry.seen + 1, self._on_delete, self._on_reset)
        if ident is None:
            return Listening.DOWN
        self._watches[ahead] = _Shared(ident, {seat.owner})
        return Listening.ON

    def _on_delete(self, key: bytes) -> None:
        """``key`` was deleted: wake whoever waits behind it; a hold of ours is over."""
        self._wake_behind(key)
        entry = self._by_key.get(key)
        if entry is not None and entry.held and not entry.releasing:
            self._unwatch_own(entry)
            self.context.start_soon(self._deleted, entry, name="lockkit-etcd-deleted")

    async def _deleted(self, entry: _Entry) -> None:
        """A held key was deleted: by the end of our lease (revoked, or expired on the
        server) — then the keeper loses every hold, saying so — or by someone else."""
        ka, link = self._ka, self._link
        if ka is not None and link is not None and not ka.gone:
            self._requests["lease_ttl"] += 1
            try:
                with anyio.fail_after(self.options.timeout):
                    reply = await link.call(
                        link.lease.LeaseTimeToLive,
                        rpc_pb2.LeaseTimeToLiveRequest(ID=ka.lease),
                        "check the lease",
                    )
            except (LockError, TimeoutError) as exc:
                logger.info("could not check the etcd lease: %s", exc)
            else:
                if reply.TTL <= 0:  # -1: not found
                    ka.gone = True
                    self._wake_keeper()
                    return
        if ka is not None and ka.gone:
            return  # the keeper loses every hold, with the lease's reason
        if entry.held and not entry.releasing:
            logger.warning("the etcd key of lock %r was deleted by someone else", entry.name)
            entry.held = False
            # the watchdog renews every hold now: this one hears False at once; others
            # are lost only if etcd cannot confirm them within the timeout
            self.context.reconfirm(
                self.options.timeout,
                "the etcd key of another lock of this client was deleted by someone else, "
                f"and this lock's key could not be read within {self.options.timeout}s",
            )

    def _on_reset(self, key: bytes) -> None:
        """A watch on ``key`` was cancelled (its start revision was compacted away):
        the waiters read the queue again and watch from a current revision; a holder
        of ``key`` is checked at once."""
        self._wake_behind(key)
        entry = self._by_key.get(key)
        if entry is not None and entry.held:
            entry.watch = None
            self.context.reconfirm(
                self.options.timeout,
                "etcd cancelled the watch on the lock's key (its revision was compacted) "
                f"and the key could not be read again within {self.options.timeout}s",
            )
            if self._watcher is not None:
                entry.watch = self._watcher.add(key, entry.rev + 1, self._on_delete, self._on_reset)

    def _wake_behind(self, key: bytes) -> None:
        shared = self._watches.pop(key, None)
        if shared is not None:
            if self._watcher is not None:
                self._watcher.remove(shared.ident)
            for owner in shared.owners:
                self._room.wake(owner)
        for waiter in list(self._behind.pop(key, {}).values()):
            waiter.ahead = None
            self._room.wake(waiter.owner)

    # -- releasing -------------------------------------------------------------------

    def _leaver(self, entry: _Entry) -> Action:
        async def leave() -> None:
            if entry.held or entry.handed is not None:  # granted as it left
                entry.held = True
                await self._delete(entry)
                return
            if entry.slot < 0:
                return
            link = self._open()
            self._requests["txn"] += 1
            await link.txn(txn((), (op_delete(entry.key),)), "leave a lock's queue")
            self._forget(entry)
            self._free_slot(entry)
            self._wake_behind(entry.key)

        return leave

    async def _delete(self, entry: _Entry) -> bool:
        """Delete a held key; True if it held until now. The one waiter of this client
        right behind it is handed the lock in the same request (its key read there)."""
        link = self._open()
        started = self.clock.now()
        peers = self._behind.get(entry.key, {})
        behind = next(iter(peers.values())) if len(peers) == 1 else None
        success = [op_delete(entry.key)]
        if behind is not None:
            success.append(op_range(behind.key))
        entry.releasing = True
        self._requests["txn"] += 1
        reply = await link.txn(txn((created_at(entry.key, entry.rev),), success), "release a lock")
        held = reply.succeeded and entry.held
        entry.held = False
        self._forget(entry)
        self._free_slot(entry)
        if behind is not None and held and behind.ahead == entry.key:
            kvs = reply.responses[1].response_range.kvs
            if kvs and kvs[0].create_revision == behind.rev and behind.lease == entry.lease:
                behind.handed = Grant(behind.rev, started)
        self._wake_behind(entry.key)
        return held

    async def release(self, name: str, owner: str) -> bool:
        entry = self._entries.get(owner)
        if entry is None or not entry.held or entry.name != name:
            return False
        return await self._delete(entry)

    async def extend(self, name: str, owner: str, *, ttl: float) -> bool:
        result = (await self.extend_many([Renewal(name, owner, ttl)]))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def extend_many(self, renewals: Sequence[Renewal]) -> list[bool | BaseException]:
        """Every held key is read in one linearizable transaction (per 128): a hold is
        renewed while its key is there with our create revision (and so our lease)."""
        link = self._open()
        results: list[bool | BaseException] = [False] * len(renewals)
        asked: list[tuple[int, _Entry]] = []
        for i, r in enumerate(renewals):
            entry = self._entries.get(r.owner)
            if entry is not None and entry.held and entry.name == r.name:
                asked.append((i, entry))
        ka = self._ka
        if not asked or ka is None or ka.gone:
            return results
        started = self.clock.now()
        for first in range(0, len(asked), etcd.MAX_TXN_OPS):
            part = asked[first : first + etcd.MAX_TXN_OPS]
            self._requests["txn"] += 1
            try:
                reply = await link.txn(
                    txn((), [op_range(entry.key) for _, entry in part]), "renew leases"
                )
            except BackendUnavailable as exc:
                for i, _ in part:
                    results[i] = exc
                continue
            for (i, entry), response in zip(part, reply.responses, strict=True):
                kvs = response.response_range.kvs
                if entry.held and kvs and kvs[0].create_revision == entry.rev:
                    entry.expires = started + renewals[i].ttl
                    results[i] = True
                elif entry.held:
                    entry.held = False
                    self._unlink(entry)
                    self._forget(entry)
                    self._free_slot(entry)
        return results

    async def inspect(self, name: str) -> LockInfo:
        link = self._open()
        prefix = self.prefix(name)
        self._requests["txn"] += 1
        reply = await link.txn(
            txn(
                (),
                (op_range(prefix, prefix_end(prefix), limit=INSPECT_QUEUE + 1, order=ASCEND),),
            ),
            "look at a lock's queue",
        )
        found = reply.responses[0].response_range
        if not found.kvs:
            return LockInfo(name, None, 0)
        kv, *behind = found.kvs
        owner, record = _parse_value(kv.value, kv.key[len(prefix) :])
        entry = self._entries.get(owner)
        expires = None
        if entry is not None and entry.held and entry.rev == kv.create_revision:
            expires = max(0.0, entry.expires - self.clock.now())
        queue = []
        for w in behind:
            waiter, known = _parse_value(w.value, w.key[len(prefix) :])
            queue.append(WaiterInfo(waiter, w.create_revision, known))
        holder = HolderInfo(owner, kv.create_revision, expires, record)
        return LockInfo(name, holder, found.count - 1, tuple(queue))

    async def list_names(self, prefix: str = "") -> list[str]:
        link = self._open()
        root = f"{self.options.root}/".encode() if self.options.root else b""
        start = root + etcd.encode_name(prefix).encode()
        self._requests["txn"] += 1
        reply = await link.txn(
            txn((), (op_range(start, prefix_end(start), keys_only=True),)), "list the locks"
        )
        names = set()
        for kv in reply.responses[0].response_range.kvs:
            segment, slash, _ = kv.key[len(root) :].rpartition(b"/")
            if slash and b"/" not in segment:
                names.add(etcd.decode_name(segment))
        return sorted(n for n in names if n.startswith(prefix))

    async def force_release(self, name: str) -> int | None:
        """Deletes the holder's key if it is still the one read: the waiter behind it
        is woken by its watch; the holder's client sees its key deleted."""
        link = self._open()
        prefix = self.prefix(name)
        self._requests["txn"] += 2
        reply = await link.txn(
            txn((), (op_range(prefix, prefix_end(prefix), limit=1, order=ASCEND),)),
            "look at a lock's holder",
        )
        kvs = reply.responses[0].response_range.kvs
        if not kvs:
            return None
        kv = kvs[0]
        done = await link.txn(
            txn((created_at(kv.key, kv.create_revision),), (op_delete(kv.key),)),
            "break a lock",
        )
        return int(kv.create_revision) if done.succeeded else None

    # -- the lease ---------------------------------------------------------------------

    def _wake_keeper(self) -> None:
        self._next_wake = -math.inf
        self._poke.set()

    async def _keep(self) -> None:
        """Keeps the lease alive; replaces it when it is gone."""
        while True:
            ka = self._lease()
            async with anyio.create_task_group() as tg:
                tg.start_soon(ka.run)
                await self._follow(ka)
                tg.cancel_scope.cancel()
            await self._replace_lease()

    async def _follow(self, ka: KeepAlive) -> None:
        """Until the lease is gone: holds at risk while keep-alives fail, all lost past
        the lease's safe deadline; a hold past its own ttl has its key deleted."""
        outage = False
        while True:
            self._poke = poke = anyio.Event()
            now = self.clock.now()
            held = [e for e in self._entries.values() if e.held]
            if ka.gone:
                self._lose_all(
                    f"the etcd lease {ka.lease:x} is gone (expired or revoked): "
                    "etcd deleted every key on it"
                )
                return
            if ka.failing and not outage and held:
                ctx = self.context
                ctx.reconfirm(
                    max(0.0, ka.deadline - now),
                    "keep-alives of the etcd lease failed and none was confirmed before "
                    "the lease's safe deadline (last confirmed keep-alive + ttl - 10 %): "
                    "the lease may have expired on the server",
                )
            outage = ka.failing
            wake = math.inf
            if held and now >= ka.deadline:
                self._lose_all(
                    "no keep-alive of the etcd lease was confirmed before its safe deadline "
                    "(last confirmed keep-alive + ttl - 10 %)"
                )
                held = []
            elif held:
                wake = ka.deadline
            for entry in held:
                if entry.expires <= now:
                    self._expire(entry)
                    continue
                wake = min(wake, entry.expires)
                if entry.watch is None:
                    wake = min(wake, self._watch_own(entry, now))
            self._next_wake = wake
            await self.clock.wait(poke, wake)

    def _watch_own(self, entry: _Entry, now: float) -> float:
        """Watch a held key once its time has come; when to look again."""
        if entry.watch_at > now:
            return entry.watch_at
        watcher = self._watcher
        if watcher is not None:
            entry.watch = watcher.add(entry.key, entry.watch_from, self._on_delete, self._on_reset)
        return math.inf if entry.watch is not None else now + 0.5

    def _expire(self, entry: _Entry) -> None:
        """A holder that did not renew within its ttl: delete its key."""
        entry.expires = math.inf
        ctx = self.context

        async def delete() -> None:
            if entry.held:
                await self._delete(entry)

        ctx.start_soon(
            ctx.cleanup.run,
            f"delete the expired key of {entry.name!r}",
            delete,
            name="lockkit-etcd-expire",
        )

    def _lose_all(self, reason: str) -> None:
        held = [e for e in self._entries.values() if e.held]
        if not held:
            return
        logger.warning("etcd locks lost: %s", reason)
        for entry in held:
            entry.held = False
            self._unlink(entry)
            self._forget(entry)
            self.context.cleanup.defer(  # the key may still be there: delete it
                f"delete the lost key of {entry.name!r}", self._deleter(entry.key, entry)
            )
        self.context.reconfirm(0.0, reason)

    def _deleter(self, key: bytes, entry: _Entry) -> Action:
        async def delete() -> None:
            self._requests["txn"] += 1
            await self._open().txn(txn((), (op_delete(key),)), "delete a lost key")
            self._free_slot(entry)

        return delete

    async def _replace_lease(self) -> None:
        """The lease is gone, and every key on it: grant another; waiters queue again."""
        link = self._open()
        delay = 0.1
        while True:
            try:
                self._ka = await self._grant(link)
                break
            except BackendUnavailable as exc:
                logger.info("could not grant a new etcd lease yet: %s", exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)
        for entry in list(self._entries.values()):
            if not entry.held and entry.rev:
                self._unlink(entry)
        self._room.wake_all()

    def __repr__(self) -> str:
        state = "open" if self._link is not None else "closed"
        lease = f" lease={self._ka.lease:x}" if self._ka is not None else ""
        return f"<EtcdBackend root={self.options.root!r} {state}{lease}>"
