"""The ZooKeeper backend: ``zookeeper://`` (alias ``zk://``).

URL grammar::

    zookeeper://[user:password@]host[:2181][,host[:2181]...][/chroot][?option=value...]

Options (keyword or query string; keywords win; see
:class:`~lockkit._drivers.zookeeper.options.ZooKeeperOptions`):

===================  ==========  ==========================================================
``root``             /lockkit    parent of the locks: lock ``N`` lives at ``{root}/{N}``
``session_timeout``  10          seconds asked for the session (the server may adjust it)
``timeout``          5           seconds per request
``connect_timeout``  10          seconds to reach a server when the client is entered
===================  ==========  ==========================================================

With ``user:password`` the client authenticates with the ``digest`` scheme on every
connection, and the nodes it creates are readable and writable by that user only.

Layout (Curator's ``InterProcessMutex``): each acquisition creates an ephemeral
sequential node ``{root}/{N}/_c_<uuid>-lock-<seq>``, where the uuid is the
acquisition's owner id, and the node with the lowest sequence holds. ``N`` is the name
with every character outside ``[A-Za-z0-9-_.:~]`` %-encoded, so a name never escapes
its parent (``/``, ``..``) and ``a`` and ``a/b`` are separate locks. With
``root=/locks`` the lock named ``task`` sits at ``/locks/task``, exactly where a Java
service's ``new InterProcessMutex(client, "/locks/task")`` puts its nodes, so the two
exclude each other. Lock directories (and the root) are container nodes, removed by the
server once empty.

Tokens: the holder node's ``czxid``. Zxids are global and rise with every write, so
tokens rise from one holder to the next even when a lock's directory was removed and
its sequence numbers start again.

Waiting: a waiter watches only the node just ahead of it (no herd); arrival order is
the sequence order, so the lock is fair. When the node ahead belongs to this client,
no watch is set: deleting it wakes the waiter directly, and when it was the holder's,
hands the lock over without another request. A cancelled or timed-out waiter deletes
its node (shielded, retried); a node whose create reply was lost is found by its uuid.

Leases: a node lives as long as the session (heartbeats keep it) and, on top of that,
as long as its holder renews within the lock's ttl; a holder that stops renewing has
its node deleted by its own client at the ttl. While the connection is down the leases
are at risk; past the session's safe deadline (the last answer from the server +
session timeout - 10 %), or when the session is found expired, every lease is lost:
bodies are cancelled and raise :class:`~lockkit.LockLostError`. A reconnect within
the session keeps the locks.

TLS: aiozk has no TLS support; asking for it raises ConfigurationError.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import math
from collections.abc import Sequence
from typing import Any, ClassVar, final

import aiozk
import anyio

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
from .._core._errors import BackendUnavailable, ConfigurationError, LockUsageError
from .._core._options import parse_options
from .._core._url import LockURL
from .._core._waiting import Listening, Seat, Turn, WaitRoom, wait_turn
from .._drivers import zookeeper as zk
from .._drivers.zookeeper.link import Link
from .._drivers.zookeeper.options import ZKClientP, ZooKeeperLockOptions, ZooKeeperOptions
from .._drivers.zookeeper.session import SessionKeeper

__all__ = ("ZooKeeperBackend",)

logger = logging.getLogger("lockkit.zookeeper")

#: Tries at creating a node when its directory keeps vanishing.
CREATE_TRIES = 5
#: Waiters :meth:`ZooKeeperBackend.inspect` lists (with their owner records).
INSPECT_QUEUE = 100
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile", "tls")


@dataclasses.dataclass(slots=True, eq=False)
class _Node:
    """One acquisition of this client: its node, its place in the queue, its lease."""

    name: str
    owner: str
    folder: str
    ttl: float
    path: str | None = None
    token: int = 0
    #: a create was sent whose reply never came: the node may exist
    unsure: bool = False
    #: the node just ahead (while waiting)
    ahead: str | None = None
    #: set when the holder ahead of it (in this client) deleted its node
    handed: Grant | None = None
    held: bool = False
    expires: float = math.inf
    #: the owner record's task field (see :func:`owner_record`)
    task: str = "null"


@final
class ZooKeeperBackend(Backend):
    """Locks in ZooKeeper. See the module docstring for layout, tokens and sessions.

    .. versionadded:: 0.1
    """

    kind: ClassVar[str] = "zookeeper"
    schemes: ClassVar[tuple[str, ...]] = ("zookeeper", "zk")
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
        client: ZKClientP,
        options: ZooKeeperLockOptions = ZooKeeperLockOptions(),  # noqa: B008 - frozen
        *,
        credentials: bytes | None = None,
        owned: bool = False,
        connect_timeout: float = 10.0,
    ) -> None:
        self.options = options
        self._client = client
        self._credentials = credentials
        self._owned = owned
        self._connect_timeout = connect_timeout
        self._link: Link | None = None
        self._room = WaitRoom()
        self._nodes: dict[str, _Node] = {}  # by owner
        self._by_path: dict[str, _Node] = {}
        self._behind: dict[str, _Node] = {}  # node path -> the local waiter right behind it
        self._watches: dict[str, set[str]] = {}  # watched path -> owners waiting on it
        self._folders: dict[str, None] = {}  # lock directories known to exist
        self._making: dict[str, asyncio.Future[None]] = {}  # parents being created
        self._requests: collections.Counter[str] = collections.Counter()
        self._keeper: SessionKeeper | None = None

    # -- construction ----------------------------------------------------------------

    @classmethod
    def from_url(cls, url: LockURL, **options: Any) -> ZooKeeperBackend:
        if any(k in _TLS_OPTIONS for k in (*url.query, *options)):
            raise ConfigurationError(
                "the zookeeper backend cannot use TLS: aiozk speaks plain TCP only; "
                "reach the servers through a TLS tunnel (stunnel, a service mesh) instead"
            )
        opts = parse_options(ZooKeeperOptions, cls.kind, url.query, options)
        credentials = None
        if url.username is not None or url.password is not None:
            if not url.username or url.password is None:
                raise ConfigurationError(
                    "ZooKeeper digest credentials are 'user:password@' with both parts"
                )
            credentials = f"{url.username}:{url.password}".encode()
        return cls(
            zk.client_from_url(url, opts),
            opts,
            credentials=credentials,
            owned=True,
            connect_timeout=opts.connect_timeout,
        )

    @classmethod
    def from_client(cls, client: aiozk.ZKClient, **options: Any) -> ZooKeeperBackend:
        """Use the application's ``aiozk.ZKClient`` (started here if it was not).

        lockkit never closes it, and creates nodes with the client's ``default_acl``.

        Args:
            client: the application's client.
            **options: the lock options (``root``, ``timeout``) as for URLs.
        """
        opts = parse_options(ZooKeeperLockOptions, cls.kind, {}, options)
        return cls(client, opts)

    def path(self, name: str) -> str:
        """The directory of lock ``name``'s nodes, below the chroot."""
        root = self.options.root
        segment = zk.encode_name(name, at_top=root == "/")
        return f"{root.rstrip('/')}/{segment}"

    # -- lifecycle -------------------------------------------------------------------

    async def aopen(self, ctx: BackendContext) -> None:
        await super().aopen(ctx)
        link = Link(
            self._client,
            ctx.clock,
            timeout=self.options.timeout,
            credentials=self._credentials,
            owned=self._owned,
        )
        self._credentials = None
        self._link = link
        await link.open(self._connect_timeout)
        try:
            # the server answers (and the credentials work); the root is made now, not by
            # every acquisition of a first burst finding it missing
            root = link.path(self.options.root)
            self._requests["exists"] += 1
            reply = await link.call(zk.exists(root), "reach ZooKeeper")
            if isinstance(reply, Exception) and not isinstance(reply, zk.NoNode):
                raise zk.driver_error(reply, "reach ZooKeeper")
            if isinstance(reply, zk.NoNode) and root != "/":
                await self._make_parents(link, f"{root}/-")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await link.close()
            raise
        self._keeper = keeper = SessionKeeper(link, ctx.clock, _Leases(self, link))
        ctx.start_soon(keeper.run, name="lockkit-zookeeper-session")

    async def aclose(self) -> None:
        room = self._room
        room.close()  # waits in flight end with LockUsageError, after leaving the queue
        with anyio.move_on_after(self.options.timeout):
            await room.drained()
        link, self._link = self._link, None
        if link is not None:
            for path in list(self._watches):
                link.unwatch(path, self._on_watch)
            await link.close()

    async def ping(self) -> None:
        link = self._open()
        self._requests["children"] += 1
        reply = await link.call(zk.children(link.path(self.options.root)), "ping ZooKeeper")
        if isinstance(reply, Exception) and not isinstance(reply, zk.NoNode):
            raise zk.driver_error(reply, "ping ZooKeeper")

    def statistics(self) -> BackendStatistics:
        ctx = self._context
        return BackendStatistics(
            dict(self._requests),
            self._room.wakeups,
            len(self._watches),
            self._room.waiting(),
            ctx.cleanup.pending if ctx else 0,
        )

    def _open(self) -> Link:
        if self._link is None:
            raise LockUsageError("the ZooKeeper backend is not open")
        return self._link

    # -- acquiring -------------------------------------------------------------------

    async def acquire(self, claim: Claim, *, timeout: float | None) -> Grant:
        if not claim.exclusive:
            raise ConfigurationError("the ZooKeeper backend offers exclusive locks only")
        link = self._open()
        if claim.owner in self._nodes:
            raise LockUsageError(f"owner id {claim.owner!r} is already in use")
        node = _Node(claim.name, claim.owner, link.path(self.path(claim.name)), claim.ttl)
        node.task = task_field(current_task_name())
        self._nodes[claim.owner] = node
        try:
            return await wait_turn(
                functools.partial(self._try, node),
                name=claim.name,
                owner=claim.owner,
                room=self._room,
                clock=self.clock,
                cleanup=self.context.cleanup,
                leave=self._leaver(node),
                timeout=timeout,
                fallback=min(5.0, max(0.5, claim.ttl / 2)),
                outage_grace=max(10.0, 3 * self.options.timeout),
                listen=self._listen,
            )
        finally:
            if not node.held:  # a cleanup still pending finds its node by uuid
                self._unlink(node)
                self._forget(node)

    async def _try(self, node: _Node, queue: bool) -> Turn:
        """One look: take the lock if this node is first, else note the node ahead."""
        link = self._open()
        started = self.clock.now()
        if node.handed is not None:  # the holder ahead of us, in this client, let go
            return Turn(self._take(node, node.handed))
        if (  # try once: ask before queueing
            node.path is None and not queue and zk.lock_nodes(await self._list(link, node.folder))
        ):
            return Turn()
        if node.path is None:
            listing = await self._create(link, node)
        else:
            listing = await self._list(link, node.folder)
        order = [child for _, child in zk.lock_nodes(listing)]
        mine = node.path.rpartition("/")[2] if node.path is not None else ""
        if mine not in order:  # our node is gone (session replaced): queue again
            self._unlink(node)
            if not queue:
                return Turn()
            listing = await self._create(link, node)
            order = [child for _, child in zk.lock_nodes(listing)]
            mine = node.path.rpartition("/")[2] if node.path is not None else ""
        self._drop_strays(node, order, mine)
        place = order.index(mine) if mine in order else -1
        if place == 0:
            return Turn(self._take(node, Grant(node.token, started)))
        if not queue:
            await self._delete_node(node)
            return Turn()
        self._queue_behind(node, f"{node.folder}/{order[place - 1]}" if place > 0 else None)
        return Turn()

    def _take(self, node: _Node, grant: Grant) -> Grant:
        node.held = True
        node.handed = None
        node.expires = grant.started + node.ttl
        self._queue_behind(node, None)
        if self._keeper is not None:  # the session keeper may have to look sooner
            self._keeper.look_by(node.expires)
        return grant

    def _queue_behind(self, node: _Node, ahead: str | None) -> None:
        if node.ahead is not None and self._behind.get(node.ahead) is node:
            del self._behind[node.ahead]
        node.ahead = ahead
        if ahead is not None:
            self._behind[ahead] = node

    async def _list(self, link: Link, folder: str) -> list[str]:
        self._requests["children"] += 1
        reply = await link.call(zk.children(folder), "list a lock's nodes")
        return [] if isinstance(reply, zk.NoNode) else list(reply.children)

    async def _create(self, link: Link, node: _Node) -> list[str]:
        """Create ``node`` and return its siblings' names; a node left by a create whose
        reply was lost is adopted.

        In a directory this client knows, the create and the listing go back to back (one
        round trip). Otherwise the directory is created with the node in one multi: when
        that succeeds the node is the directory's only one, and nothing needs listing."""
        if node.unsure and await self._adopt(link, node):
            return await self._list(link, node.folder)
        folder = node.folder
        record = owner_record(field=node.task).encode()  # the node's data: who asked, when
        request = zk.create_node(f"{folder}/{zk.node_prefix(node.owner)}", link.acl, record)
        for _ in range(CREATE_TRIES):
            node.unsure = True
            self._requests["create"] += 1
            if folder in self._folders:
                self._requests["children"] += 1
                created, listing = await link.call_many(
                    (request, zk.children(folder)), "create a lock node"
                )
                if isinstance(created, zk.NoNode):  # the empty directory was removed
                    node.unsure = False
                    self._folders.pop(folder, None)
                    continue
                if isinstance(created, Exception):
                    raise zk.driver_error(created, "create a lock node")
                siblings = [] if isinstance(listing, Exception) else list(listing.children)
            else:
                both = await link.call(
                    zk.multi(zk.create_container(folder, link.acl), request), "create a lock node"
                )
                if isinstance(both.responses[1], zk.ResponseError):
                    failed = both.responses[0]
                    node.unsure = False
                    if isinstance(failed, zk.NodeExists):  # the directory is there already
                        self._remember_folder(folder)
                    elif isinstance(failed, zk.NoNode):  # so is not the root
                        await self._make_parents(link, folder)
                    else:
                        raise zk.driver_error(failed, "create a lock node")
                    continue
                created = both.responses[1]
                self._remember_folder(folder)
                siblings = [created.path.rpartition("/")[2]]
            node.unsure = False
            self._link_node(node, created.path, created.stat.created_zxid)
            return siblings
        raise BackendUnavailable(f"could not create a node for lock {node.name!r}")

    def _remember_folder(self, folder: str) -> None:
        if len(self._folders) >= 4096:
            self._folders.pop(next(iter(self._folders)))
        self._folders[folder] = None

    async def _make_parents(self, link: Link, folder: str) -> None:
        """Create the containers above ``folder`` (the root and its parents), once for
        every waiter that found them missing at the same time."""
        above = folder.rpartition("/")[0]
        making = self._making.get(above)
        if making is None:
            making = self._making[above] = asyncio.ensure_future(self._create_parents(link, folder))
            making.add_done_callback(functools.partial(self._made, above))
        await asyncio.shield(making)

    def _made(self, above: str, making: asyncio.Future[None]) -> None:
        self._making.pop(above, None)
        if not making.cancelled():
            making.exception()  # retrieved: the waiters that are left get it too

    async def _create_parents(self, link: Link, folder: str) -> None:
        parts = folder.split("/")[1:-1]
        chroot_depth = len(link.chroot.split("/")) - 1 if link.chroot else 0
        for depth in range(chroot_depth + 1, len(parts) + 1):
            path = "/" + "/".join(parts[:depth])
            self._requests["create"] += 1
            reply = await link.call(zk.create_container(path, link.acl), "create a lock's parent")
            if isinstance(reply, Exception) and not isinstance(reply, zk.NodeExists):
                raise zk.driver_error(reply, "create a lock's parent")

    async def _adopt(self, link: Link, node: _Node) -> bool:
        """Find the node a lost create reply left behind, by the owner's uuid."""
        prefix = zk.node_prefix(node.owner)
        for child in await self._list(link, node.folder):
            if child.startswith(prefix):
                path = f"{node.folder}/{child}"
                self._requests["exists"] += 1
                stat = await link.call(zk.exists(path), "look at a lock node")
                if isinstance(stat, zk.NoNode):
                    continue
                node.unsure = False
                self._link_node(node, path, stat.stat.created_zxid)
                return True
        node.unsure = False
        return False

    def _drop_strays(self, node: _Node, order: list[str], mine: str) -> None:
        """Delete our other nodes (left by a create that was applied twice)."""
        prefix = zk.node_prefix(node.owner)
        for child in order:
            if child != mine and child.startswith(prefix):
                self.context.cleanup.defer(
                    f"delete a stray node of {node.name!r}",
                    functools.partial(self._delete_path, f"{node.folder}/{child}"),
                )

    def _link_node(self, node: _Node, path: str, token: int) -> None:
        node.path, node.token = path, token
        self._by_path[path] = node

    def _unlink(self, node: _Node) -> None:
        """Forget ``node``'s place in the queue (its node is gone or never was)."""
        self._queue_behind(node, None)
        if node.path is not None and self._by_path.get(node.path) is node:
            del self._by_path[node.path]
        node.path = None

    def _forget(self, node: _Node) -> None:
        if self._nodes.get(node.owner) is node:
            del self._nodes[node.owner]

    # -- waiting -----------------------------------------------------------------------

    async def _listen(self, seat: Seat) -> Listening:
        node = self._nodes.get(seat.owner)
        if node is None or node.handed is not None:
            return Listening.NEW
        ahead = node.ahead
        if ahead is None:
            return Listening.NEW
        if ahead in self._by_path:  # ours: deleting it wakes this waiter
            return Listening.ON
        owners = self._watches.get(ahead)
        if owners is not None:
            owners.add(seat.owner)
            return Listening.ON
        link = self._open()
        self._watches[ahead] = {seat.owner}
        link.watch(ahead, self._on_watch)
        self._requests["watch"] += 1
        try:
            reply = await link.call(zk.get_data(ahead, watch=True), "watch a lock node")
        except BackendUnavailable:
            self._drop_watch(ahead)
            return Listening.DOWN
        if isinstance(reply, zk.NoNode):  # gone already: look again
            self._drop_watch(ahead)
            return Listening.NEW
        return Listening.ON

    def _on_watch(self, path: str) -> None:
        for owner in self._drop_watch(path):
            self._room.wake(owner)

    def _drop_watch(self, path: str) -> set[str]:
        owners = self._watches.pop(path, set())
        if self._link is not None:
            self._link.unwatch(path, self._on_watch)
        return owners

    # -- releasing -------------------------------------------------------------------

    def _leaver(self, node: _Node) -> Action:
        async def leave() -> None:
            await self._remove(node.name, node.owner)

        return leave

    async def _remove(self, name: str, owner: str) -> bool:
        """Delete ``owner``'s node of ``name``, found by its uuid if its path is unknown;
        True if it held the lock."""
        link = self._open()
        node = self._nodes.get(owner)
        if node is not None and node.path is not None and not node.unsure:
            return await self._delete_node(node)
        folder = link.path(self.path(name))
        prefix = zk.node_prefix(owner)
        order = [child for _, child in zk.lock_nodes(await self._list(link, folder))]
        held = False
        for child in order:
            if child.startswith(prefix):
                await self._delete_path(f"{folder}/{child}")
                held = held or child == order[0]
        if node is not None:
            node.unsure = False
            self._unlink(node)
            self._forget(node)
        return held and node is not None and node.held

    async def _delete_path(self, path: str) -> bool:
        self._requests["delete"] += 1
        reply = await self._open().call(zk.delete(path), "delete a lock node")
        return not isinstance(reply, zk.NoNode)

    async def _delete_node(self, node: _Node) -> bool:
        """Delete ``node``; True if it held the lock until now. The waiter of this
        client right behind it is woken, and handed the lock if it was held."""
        path = node.path
        assert path is not None
        started = self.clock.now()
        deleted = await self._delete_path(path)
        held = deleted and node.held
        node.held = False
        behind = self._behind.pop(path, None)
        self._unlink(node)
        self._forget(node)
        if behind is not None and behind.ahead == path:
            behind.ahead = None
            if held:
                behind.handed = Grant(behind.token, started)
            self._room.wake(behind.owner)
        return held

    async def release(self, name: str, owner: str) -> bool:
        node = self._nodes.get(owner)
        if node is not None and not node.held:  # a waiter of ours: not the holder
            return False
        return await self._remove(name, owner)

    async def extend(self, name: str, owner: str, *, ttl: float) -> bool:
        result = (await self.extend_many([Renewal(name, owner, ttl)]))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def extend_many(self, renewals: Sequence[Renewal]) -> list[bool | BaseException]:
        """Each lease is checked by one ``exists`` on its node (sent back to back): the
        node is there and belongs to this session."""
        link = self._open()
        results: list[bool | BaseException] = [False] * len(renewals)
        asked: list[tuple[int, _Node]] = []
        for i, r in enumerate(renewals):
            node = self._nodes.get(r.owner)
            if node is not None and node.held and node.path is not None and node.name == r.name:
                asked.append((i, node))
        if not asked:
            return results
        started = self.clock.now()
        self._requests["exists"] += len(asked)
        try:
            replies = await link.call_many(
                [zk.exists(node.path) for _, node in asked if node.path], "renew leases"
            )
        except BackendUnavailable as exc:
            for i, _ in asked:
                results[i] = exc
            return results
        session = link.session.session_id
        for (i, node), reply in zip(asked, replies, strict=True):
            if isinstance(reply, zk.NoNode) or reply.stat.ephemeral_owner != session:
                node.held = False
                self._unlink(node)
                self._forget(node)
                continue
            node.expires = started + renewals[i].ttl
            results[i] = True
        return results

    async def inspect(self, name: str) -> LockInfo:
        """The nodes of ``name`` and their data (owner records), read back to back."""
        link = self._open()
        folder = link.path(self.path(name))
        for _ in range(CREATE_TRIES):
            order = zk.lock_nodes(await self._list(link, folder))
            if not order:
                return LockInfo(name, None, 0)
            shown = order[: INSPECT_QUEUE + 1]
            self._requests["get_data"] += len(shown)
            replies = await link.call_many(
                [zk.get_data(f"{folder}/{child}") for _, child in shown], "look at a lock's nodes"
            )
            if isinstance(replies[0], zk.NoNode):  # the holder let go meanwhile: look again
                continue
            if isinstance(replies[0], Exception):
                raise zk.driver_error(replies[0], "look at a lock's holder")
            first, data = shown[0][1], replies[0]
            owner = zk.owner_of(first)
            node = self._nodes.get(owner)
            expires = max(0.0, node.expires - self.clock.now()) if node and node.held else None
            holder = HolderInfo(
                owner, data.stat.created_zxid, expires, OwnerRecord.decode(data.data)
            )
            queue = tuple(
                WaiterInfo(zk.owner_of(child), seq, OwnerRecord.decode(reply.data))
                for (seq, child), reply in zip(shown[1:], replies[1:], strict=True)
                if not isinstance(reply, Exception)
            )
            return LockInfo(name, holder, len(order) - 1, queue)
        raise BackendUnavailable(f"lock {name!r} changed hands too fast to inspect")

    async def list_names(self, prefix: str = "") -> list[str]:
        """The directories under the root whose name starts with ``prefix`` and that
        hold a lock node (listed back to back)."""
        link = self._open()
        root = link.path(self.options.root)
        self._requests["children"] += 1
        reply = await link.call(zk.children(root), "list the locks")
        if isinstance(reply, zk.NoNode):
            return []
        candidates = {}
        for segment in reply.children:
            if root == "/" and segment == "zookeeper":
                continue  # the server's own
            name = zk.decode_name(segment)
            if name.startswith(prefix):
                candidates[name] = f"{root.rstrip('/')}/{segment}"
        if not candidates:
            return []
        self._requests["children"] += len(candidates)
        listings = await link.call_many(
            [zk.children(path) for path in candidates.values()], "list the locks"
        )
        return sorted(
            name
            for name, listing in zip(candidates, listings, strict=True)
            if not isinstance(listing, Exception) and zk.lock_nodes(listing.children)
        )

    async def force_release(self, name: str) -> int | None:
        """Deletes the holder's node: the waiter behind it is woken by its watch, and the
        holder's next renewal finds the node gone."""
        link = self._open()
        folder = link.path(self.path(name))
        order = zk.lock_nodes(await self._list(link, folder))
        if not order:
            return None
        path = f"{folder}/{order[0][1]}"
        self._requests["exists"] += 1
        self._requests["delete"] += 1
        stat, deleted = await link.call_many([zk.exists(path), zk.delete(path)], "break a lock")
        if isinstance(stat, zk.NoNode) or isinstance(deleted, zk.NoNode):
            return None  # released meanwhile: nothing broken
        for reply in (stat, deleted):
            if isinstance(reply, Exception):
                raise zk.driver_error(reply, "break a lock")
        return int(stat.stat.created_zxid)

    def __repr__(self) -> str:
        return f"<ZooKeeperBackend root={self.options.root!r} {self._link or 'closed'}>"


# -- the session: what it means for the nodes -------------------------------------------


@final
class _Leases:
    """The backend's side of its :class:`SessionKeeper`: the held nodes, what ending
    one means, and what each loss is called."""

    def __init__(self, backend: ZooKeeperBackend, link: Link) -> None:
        self._backend = backend
        self._link = link

    def held(self) -> bool:
        return any(node.held for node in self._backend._nodes.values())

    def expire_due(self, now: float) -> float:
        wake = math.inf
        for node in [n for n in self._backend._nodes.values() if n.held]:
            if node.expires <= now:
                self._expire(node)
            else:
                wake = min(wake, node.expires)
        return wake

    async def probe(self) -> None:
        backend, link = self._backend, self._link
        backend._requests["exists"] += 1
        await link.call(zk.exists(link.path(backend.options.root)), "probe the session")

    def at_risk(self, within: float) -> None:
        logger.warning("ZooKeeper connection lost; locks are at risk")
        self._backend.context.reconfirm(
            within,
            "the connection to ZooKeeper was down past the session's safe "
            "deadline (the session may have expired on the server)",
        )

    def restored(self) -> None:
        """After a reconnect every waiter looks again (watches may have been lost)."""
        backend = self._backend
        for path in list(backend._watches):
            backend._drop_watch(path)
        backend._room.wake_all()

    def deadline_passed(self) -> None:
        self._lose_all("no answer from ZooKeeper within the session timeout")

    def replaced(self) -> None:
        """The session expired and aiozk opened another: every node of ours is gone."""
        backend = self._backend
        if self.held():
            self._lose_all("the ZooKeeper session expired")
        for node in list(backend._nodes.values()):  # a waiter queues again
            node.unsure = False
            backend._unlink(node)
        backend._room.wake_all()

    def _expire(self, node: _Node) -> None:
        """A holder that did not renew within its ttl: delete its node."""
        node.expires = math.inf
        ctx = self._backend.context
        ctx.start_soon(
            ctx.cleanup.run,
            f"delete the expired node of {node.name!r}",
            self._backend._leaver(node),
            name="lockkit-zookeeper-expire",
        )

    def _lose_all(self, reason: str) -> None:
        logger.warning("ZooKeeper locks lost: %s", reason)
        backend = self._backend
        backend.context.reconfirm(0.0, reason)
        for node in list(backend._nodes.values()):
            if node.held:  # the server may still have it: delete it when it can
                node.held = False
                backend.context.cleanup.defer(
                    f"delete the lost node of {node.name!r}", backend._leaver(node)
                )
