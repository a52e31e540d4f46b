"""Where the Redis of a backend is, and how to talk to it.

A topology is a frozen, inert value (configuration only; nothing happens until
:meth:`open`): :class:`Single`, :class:`Sentinel`, :class:`Cluster` or
:class:`AppClient` (the application's own client). Each knows

* ``open(options) -> Executor``: the live object that runs scripts and commands (and
  has ``aclose``), and makes the wake-up listener that fits it;
* ``wake_kind``: how the scripts wake a waiter (the Lua flag);
* ``group_of(key)``: which keys one script call may take together (the Cluster slot;
  None where any keys may go together).
"""

from __future__ import annotations

import abc
import asyncio
import bisect
import contextlib
import dataclasses
import enum
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, final

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from ..._core._backend import Reconfirm
from ..._core._errors import ConfigurationError
from .errors import is_refused
from .resp import (
    Arg,
    ConnectOptions,
    Encoded,
    NotSentError,
    RespConnection,
    RespError,
    Script,
    fixed,
)
from .sentinel import RECONFIRM, SentinelView
from .slots import Claim, SlotRange, merge, moved, parse_nodes

if TYPE_CHECKING:
    from .wakeups import ClientChannel, Listen, Subscriber, Wakeups

__all__ = (
    "AppClient",
    "Cluster",
    "ClusterExecutor",
    "Executor",
    "Sentinel",
    "Single",
    "Topology",
    "WakeKind",
)

Node = tuple[str, int]

logger = logging.getLogger("lockkit")

#: Seconds between two reads of the Cluster's slot map while the client is open.
FOLLOW = 1.0
#: Seconds the other nodes' answers are waited for after the first one arrived.
LATE = 0.2


class WakeKind(enum.Enum):
    """How a script wakes the next waiter; the value is the scripts' flag."""

    #: The script returns whom to wake and the backend PUBLISHes (on a Cluster reached
    #: through redis-py, where a script's PUBLISH would stay on its node).
    RETURN = b"0"
    #: The script PUBLISHes on the waiter's client channel.
    PUBLISH = b"1"
    #: The script SPUBLISHes on the lock's own channel for that client, in its slot.
    SPUBLISH = b"2"


def _slot(key: str) -> int:
    return key_slot(key.encode())


# -- executors: the live side -------------------------------------------------------------


class Executor(abc.ABC):
    """Runs scripts and commands on whatever connects lockkit to Redis."""

    @abc.abstractmethod
    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run ``script`` (loading it if needed); driver errors propagate."""

    @abc.abstractmethod
    async def execute(self, *args: Arg) -> Any:
        """Run one command."""

    @abc.abstractmethod
    def wakeups(self, listen: Listen) -> Wakeups:
        """The listener that hears what the scripts send with this topology's wake kind."""

    async def scan(self, pattern: str) -> list[bytes]:
        """Every key matching the glob ``pattern`` (SCAN: no blocking, may repeat)."""
        return await _scan(self.execute, pattern)

    async def aclose(self) -> None:  # noqa: B027 - nothing to close by default
        """Close what this executor opened (never the application's client)."""

    async def follow(self, reconfirm: Reconfirm) -> None:  # noqa: B027
        """Follow changes of the primary until cancelled, dropping connections to a
        demoted one and calling ``reconfirm(within)`` for the leases it granted.
        Nothing to follow by default."""


#: Keys asked per SCAN call.
SCAN_COUNT = 1000


async def _scan(execute: Callable[..., Awaitable[Any]], pattern: str) -> list[bytes]:
    found: list[bytes] = []
    cursor: bytes | int = 0
    while True:
        cursor, keys = await execute("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT)
        found += keys
        if int(cursor) == 0:
            return found


def _redis_py(options: ConnectOptions) -> dict[str, Any]:
    """redis-py keyword arguments for the same login and TLS as lockkit's connections."""
    kwargs: dict[str, Any] = {
        "username": options.username,
        "password": options.password,
        "socket_timeout": options.timeout,
        "socket_connect_timeout": options.connect_timeout,
    }
    tls = options.tls
    if tls is not None:
        kwargs |= {
            "ssl": True,
            "ssl_cert_reqs": tls.ssl_cert_reqs,
            "ssl_ca_certs": tls.ssl_ca_certs,
            "ssl_certfile": tls.ssl_certfile,
            "ssl_keyfile": tls.ssl_keyfile,
            "ssl_check_hostname": tls.ssl_cert_reqs == "required",
        }
    return kwargs


@final
class FastExecutor(Executor):
    """lockkit's own pipelined connection to one server (fixed, or found by Sentinel)."""

    def __init__(
        self,
        conn: RespConnection,
        options: ConnectOptions,
        subscriber: Subscriber,
        view: SentinelView | None = None,
    ) -> None:
        self.conn = conn
        self.view = view
        self.timeout = options.timeout
        self.evalsha = conn.evalsha  # type: ignore[method-assign]
        self.execute = conn.execute  # type: ignore[method-assign]
        self._subscriber = subscriber
        self._channel: ClientChannel | None = None

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        return await self.conn.evalsha(script, keys, args)  # pragma: no cover - replaced

    async def execute(self, *args: Arg) -> Any:
        return await self.conn.execute(*args)  # pragma: no cover - replaced

    def wakeups(self, listen: Listen) -> Wakeups:
        from .wakeups import ClientChannel

        self._channel = ClientChannel(self._subscriber, listen, self.timeout)
        return self._channel

    async def follow(self, reconfirm: Reconfirm) -> None:
        if self.view is None:
            return
        await self.view.follow(self._switched, reconfirm)

    def _switched(self) -> None:
        """The Sentinels named a new primary: leave the old one, for locks and wake-ups."""
        self.conn.drop("the Sentinels named a new primary")
        if self._channel is not None:
            self._channel.reconnect()

    async def aclose(self) -> None:
        await self.conn.aclose()
        if self.view is not None:
            await self.view.aclose()


@final
class ClusterExecutor(Executor):
    """Routes each script to the master owning its keys' slot, over fast connections.

    The slot map is read (:mod:`.slots`: every known node asked, the newest epoch
    believed) on ``MOVED``/``ASK`` (the command was not run: it is retried), after a
    connection error (failover; the error is raised, since the command may have run),
    and every :data:`FOLLOW` seconds while :meth:`follow` runs. When a slot changes
    hands, every lease is confirmed again where its slot is now served: a master cut off
    from the others keeps claiming its slots until it hears of the failover, and a lease
    it alone knows of must not outlive that.
    """

    def __init__(self, seeds: Sequence[Node], options: ConnectOptions) -> None:
        self.options = options
        self._seeds = list(seeds)
        self._known: list[Node] = []
        self._conns: dict[Node, RespConnection] = {}
        self._slots: list[SlotRange] = []
        # a shared refresh outlives a cancelled asker; cancelled on close
        self._refreshing: asyncio.Task[None] | None = None
        self._closed = False
        #: called with the seconds leases have to be confirmed, when slots change hands
        self._reconfirm: Reconfirm | None = None

    def _conn(self, addr: Node) -> RespConnection:
        if self._closed:
            raise NotSentError("the cluster connections are closed")
        conn = self._conns.get(addr)
        if conn is None:
            conn = self._conns[addr] = RespConnection(fixed(addr), self.options)
        return conn

    async def refresh(self) -> None:
        """Read the slot map again (one read at a time, shared by all askers)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._read_slots())
        await asyncio.shield(self._refreshing)

    async def _ask(self, addr: Node) -> tuple[list[Claim], list[Node]]:
        reply = await self._conn(addr).execute("CLUSTER", "NODES")
        return parse_nodes(reply.decode() if isinstance(reply, bytes) else str(reply), addr)

    async def _read_slots(self) -> None:
        """Ask every node known (seeds and those the last answers listed) at once; merge
        the answers that came within :data:`LATE` seconds of the first one."""
        asks = {
            asyncio.ensure_future(self._ask(addr)): addr
            for addr in dict.fromkeys([*self._known, *self._seeds])
        }
        views: list[list[Claim]] = []
        known: list[Node] = []
        last: BaseException | None = None
        pending = set(asks)
        loop = asyncio.get_running_loop()
        until = loop.time() + self.options.timeout
        try:
            while pending and (wait := until - loop.time()) > 0:
                done, pending = await asyncio.wait(
                    pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for ask in done:
                    if (exc := ask.exception()) is not None:
                        if is_refused(exc):
                            raise exc
                        last = exc
                        continue
                    claims, nodes = ask.result()
                    if claims:
                        views.append(claims)
                    known.extend(nodes)
                    if len(views) == 1:
                        until = min(until, loop.time() + LATE)
        finally:
            for ask in pending:
                ask.cancel()
        if not views:
            raise ConnectionError(f"no cluster node answered CLUSTER NODES: {last}")
        old, self._slots = self._slots, merge(views)
        self._known = list(dict.fromkeys([*known, *self._known]))
        if old and self._reconfirm is not None and moved(old, self._slots):
            logger.warning("Cluster slots changed hands; leases are being confirmed again")
            self._reconfirm(
                RECONFIRM,
                "a Cluster slot changed hands and its new master did not confirm this lease "
                f"within {RECONFIRM:g}s",
            )

    async def follow(self, reconfirm: Reconfirm) -> None:
        self._reconfirm = reconfirm
        while True:
            await asyncio.sleep(FOLLOW)
            try:
                await self.refresh()
            except (OSError, TimeoutError, RespError, NotSentError) as exc:
                logger.debug("could not read the cluster's slot map: %s", exc)

    async def address_for(self, key: Arg) -> Node:
        """The primary serving ``key``'s slot, as the slot map last read says."""
        if not self._slots:
            await self.refresh()
        if isinstance(key, Encoded):
            key = key.args[0]
        slot = key_slot(key if isinstance(key, bytes) else str(key).encode())
        index = bisect.bisect_right(self._slots, (slot, 1 << 30)) - 1
        if index >= 0:
            start, end, addr = self._slots[index]
            if start <= slot <= end:
                return addr
        raise ConnectionError(f"no cluster node serves slot {slot}")

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        for _ in range(4):
            conn = self._conn(await self.address_for(keys[0]))
            try:
                return await conn.evalsha(script, keys, args)
            except RespError as exc:
                if not str(exc).startswith(("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")):
                    raise
                await self.refresh()  # the command did not run: retry where it belongs
            except NotSentError:
                with contextlib.suppress(Exception):
                    await self.refresh()  # a dead node: retry if the map changed
            except OSError:
                with contextlib.suppress(Exception):
                    await self.refresh()
                raise  # it may have run: let the caller decide
        raise ConnectionError("the cluster kept redirecting or refusing; its slots are moving")

    async def execute(self, *args: Arg) -> Any:
        if not self._slots:
            await self.refresh()
        return await self._conn(self._slots[0][2]).execute(*args)

    async def scan(self, pattern: str) -> list[bytes]:
        """SCAN on every master (each serves its own slots)."""
        await self.refresh()
        found: list[bytes] = []
        for addr in dict.fromkeys(addr for _, _, addr in self._slots):
            found += await _scan(self._conn(addr).execute, pattern)
        return found

    def wakeups(self, listen: Listen) -> Wakeups:
        from .wakeups import ShardedChannels

        return ShardedChannels(self, listen)

    async def aclose(self) -> None:
        self._closed = True
        if self._refreshing is not None:
            self._refreshing.cancel()
        for conn in self._conns.values():
            await conn.aclose()


@final
class ClientExecutor(Executor):
    """Through the application's redis-py client (``Redis`` or ``RedisCluster``)."""

    def __init__(self, client: aioredis.Redis | RedisCluster, timeout: float) -> None:
        self.client = client
        self.timeout = timeout

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        flat_keys = _expand(keys)
        flat = [*flat_keys, *_expand(args)]
        nkeys = len(flat_keys)
        try:
            return await self.client.execute_command("EVALSHA", script.sha, nkeys, *flat)
        except redis_errors.NoScriptError:
            return await self.client.execute_command("EVAL", script.source, nkeys, *flat)

    async def execute(self, *args: Arg) -> Any:
        return await self.client.execute_command(*_expand(args))

    async def scan(self, pattern: str) -> list[bytes]:
        return [k async for k in self.client.scan_iter(match=pattern, count=SCAN_COUNT)]

    async def _subscriber(self) -> tuple[aioredis.Redis, bool]:
        client = self.client
        if isinstance(client, aioredis.Redis):
            return client, False  # a pub/sub connection from the application's pool
        node = random.choice(client.get_nodes())
        kwargs = dict(client.connection_kwargs)
        kwargs.pop("host", None)
        kwargs.pop("port", None)
        return aioredis.Redis(host=node.host, port=int(node.port), **kwargs), True

    def wakeups(self, listen: Listen) -> Wakeups:
        from .wakeups import ClientChannel

        return ClientChannel(self._subscriber, listen, self.timeout)


def _expand(args: Sequence[Arg]) -> list[bytes | str | int | float]:
    out: list[bytes | str | int | float] = []
    for arg in args:
        if isinstance(arg, Encoded):
            out.extend(arg.args)
        else:
            out.append(arg)
    return out


# -- topologies: the inert values ---------------------------------------------------------


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Single:
    """One server."""

    host: str
    port: int = 6379
    db: int = 0

    wake_kind = WakeKind.PUBLISH
    #: One connection to one primary: ``WAIT`` (``wait_replicas``) can count its writes.
    can_wait = True

    def group_of(self, key: str) -> int | None:
        return None

    def open(self, options: ConnectOptions) -> Executor:
        host, port, db = self.host, self.port, self.db

        async def subscriber() -> tuple[aioredis.Redis, bool]:
            return aioredis.Redis(host=host, port=port, db=db, **_redis_py(options)), True

        return FastExecutor(
            RespConnection(fixed((host, port)), options, db=db), options, subscriber
        )

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.db}"


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Sentinel:
    """The primary of ``service`` as the Sentinels at ``hosts`` name it, looked up again
    at every reconnect (so the client follows a failover)."""

    hosts: tuple[Node, ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)

    wake_kind = WakeKind.PUBLISH
    can_wait = True

    def group_of(self, key: str) -> int | None:
        return None

    def open(self, options: ConnectOptions) -> Executor:
        view = SentinelView(
            self.hosts,
            self.service,
            ConnectOptions(
                username=self.username,
                password=self.password,
                connect_timeout=options.connect_timeout,
                timeout=options.timeout,
            ),
            timeout=options.timeout,
        )
        db = self.db

        async def primary() -> Node:
            node = await view.primary()  # a quorum names it, never only the node itself
            view.current = node
            return node

        async def subscriber() -> tuple[aioredis.Redis, bool]:
            # wake-ups are published where the locks are: on the primary a quorum names
            host, port = await view.primary()
            return aioredis.Redis(host=host, port=port, db=db, **_redis_py(options)), True

        conn = RespConnection(primary, options, db=db)
        return FastExecutor(conn, options, subscriber, view)

    def __str__(self) -> str:
        return f"sentinel {self.service!r} at {','.join(f'{h}:{p}' for h, p in self.hosts)}"


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Cluster:
    """A Redis Cluster reached through ``seeds``; wake-ups go over sharded pub/sub,
    one channel per contended lock, in the lock's slot."""

    seeds: tuple[Node, ...]

    wake_kind = WakeKind.SPUBLISH
    can_wait = False

    def group_of(self, key: str) -> int | None:
        return _slot(key)

    def open(self, options: ConnectOptions) -> Executor:
        return ClusterExecutor(self.seeds, options)

    def __str__(self) -> str:
        return f"cluster at {','.join(f'{h}:{p}' for h, p in self.seeds)}"


@final
@dataclasses.dataclass(frozen=True, slots=True)
class AppClient:
    """The application's own ``redis.asyncio.Redis`` or ``RedisCluster``; lockkit never
    closes it."""

    client: aioredis.Redis | RedisCluster

    #: ``WAIT`` counts the writes of one connection, and a pool has many.
    can_wait = False

    def __post_init__(self) -> None:
        if not isinstance(self.client, aioredis.Redis | RedisCluster):
            raise ConfigurationError(
                "RedisBackend.from_client() takes a redis.asyncio.Redis or "
                f"redis.asyncio.RedisCluster, not {type(self.client).__name__}"
            )

    @property
    def wake_kind(self) -> WakeKind:
        # a script's PUBLISH stays on its Cluster node: there the backend publishes
        return WakeKind.RETURN if isinstance(self.client, RedisCluster) else WakeKind.PUBLISH

    def group_of(self, key: str) -> int | None:
        return _slot(key) if isinstance(self.client, RedisCluster) else None

    def open(self, options: ConnectOptions) -> Executor:
        return ClientExecutor(self.client, options.timeout)

    def __str__(self) -> str:
        return f"{type(self.client).__name__} given by the application"


Topology = Single | Sentinel | Cluster | AppClient
