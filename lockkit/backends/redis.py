"""The Redis backend: ``redis://``, ``rediss://``, ``redis+sentinel://``, ``redis+cluster://``.

URL grammar::

    redis://[user[:password]@]host[:port][/db][?option=value...]
    rediss://...                                        (TLS; same grammar)
    redis+sentinel://[user[:password]@]s1[:26379],s2.../service_name[/db]
    redis+cluster://[user[:password]@]n1[:6379],n2...

Options (keyword or query string; keywords win): ``prefix`` (key prefix, default
``"lockkit:"``), ``fair`` (default true: arrival order with direct handoff; false lets a
free lock go to whoever asks first), ``timeout`` (seconds per command, default 5),
``connect_timeout`` (default 5), ``wait_replicas`` (after granting, wait until this many
replicas have the grant; default 0), ``wait_timeout`` (seconds for that, default 1),
``sentinel_password`` / ``sentinel_username`` (when the Sentinels need their own
credentials), ``ssl_ca_certs`` / ``ssl_cert_reqs`` (``rediss://``).

Layout: a lock named N lives in keys ``{prefix}{N'}:o`` (owner, with the lease as PX),
``:f`` (last token), ``:q`` (queue) and ``:l`` (liveness of queued clients), where N'
is N with ``%``, ``{`` and ``}`` percent-encoded: all keys of a lock share one Cluster
slot and no two names share keys.

Tokens: ``max(last token + 1, server TIME in microseconds)``, minted in the same script
that takes the lock. They strictly increase while the last token key survives; if it is
lost (failover to a replica that missed it, restart without persistence) they still
increase unless the clock of the server now answering is behind the one that minted the
last token. ``wait_replicas`` narrows the failover window further. A guard refuses an
equal token from another acquisition, so even that case cannot go unnoticed there.

Waiting: an acquisition that finds the lock taken joins the queue (the same script) and
waits for a message on its client's channel (on Cluster: a sharded channel per contended
lock, in the lock's slot); a release hands the lock to the oldest live waiter and wakes
only that one (two commands per handoff: the release, and the claim by the woken
waiter). The head waiter also wakes when the holder's lease would
end, and every waiter re-checks after a pub/sub reconnect, so a lost message costs a
bounded delay, not a hang. Each client keeps its queue entries alive with one command
per second per contended lock; entries of a client that died are skipped after 3 s.

Failover (Sentinel): the client follows the new primary. Locks held on the old primary
may be lost (asynchronous replication): holders then learn it at their next renewal
(``LockLostError``); tokens minted on the new primary stay above the old ones as long as
its clock is not behind.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import logging
import math
import random
import secrets
import ssl
from collections.abc import Awaitable, Callable, Iterator, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, ClassVar, Literal, final

import anyio
import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.crc import key_slot

from .._core._clock import Clock
from .._core._errors import BackendUnavailable, ConfigurationError, LockError, LockTimeout
from .._core._url import LockURL, as_bool, as_seconds, resolve_options
from ..abc import Backend, Capability, Grant, HolderInfo, LockInfo, Renewal
from .._drivers.redis.resp import (
    Arg,
    ConnectOptions,
    Encoded,
    NotSentError,
    PubSubConnection,
    RespConnection,
    RespError,
    Script,
)

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

__all__ = ("RedisBackend",)

logger = logging.getLogger("lockkit.redis")

#: Queue entries of a client that stopped refreshing them are skipped after this.
QUEUE_LEASE = 3.0
#: A lock handed to a waiter stays reserved for it this long.
CLAIM_WINDOW = 2.0
#: The last-token key is kept at least this long after the last grant.
FENCE_KEEP = 3600.0
#: Leases renewed per script call.
BATCH = 500


def _load(name: str) -> Script:
    source = resources.files("lockkit").joinpath("_lua", f"{name}.lua").read_text("utf-8")
    return Script(name, source)


ACQUIRE = _load("acquire")
RELEASE = _load("release")
EXTEND = _load("extend")
REFRESH = _load("refresh")
INSPECT = _load("inspect")


def _encode_name(name: str) -> str:
    return name.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


@final
class _Keys:
    """The keys of one lock, also pre-encoded for the wire."""

    __slots__ = ("all", "base", "encoded")

    def __init__(self, base: str) -> None:
        self.base = base
        self.all = (base + ":o", base + ":f", base + ":q", base + ":l")
        self.encoded = Encoded(*self.all)


@dataclasses.dataclass(eq=False, slots=True)
class _Waiters:
    """This client's waiters on one lock."""

    keys: _Keys
    events: dict[str, anyio.Event] = dataclasses.field(default_factory=dict)
    #: sharded mode: this lock's own channel, and whether its subscription is confirmed
    channel: bytes = b""
    listening: bool = False
    node: tuple[str, int] | None = None


def _as_count(value: Any) -> int:
    result = int(value)
    if result < 0:
        raise ValueError(f"expected 0 or more, got {value!r}")
    return result


def _as_prefix(value: Any) -> str:
    text = str(value)
    if any(c in text for c in "{}"):
        raise ValueError("the prefix cannot contain '{' or '}' (they mark Cluster hash tags)")
    return text


def _as_cert_reqs(value: Any) -> str:
    text = str(value).lower()
    if text not in ("required", "optional", "none"):
        raise ValueError("expected required, optional or none")
    return text


OPTIONS: dict[str, Callable[[Any], Any]] = {
    "prefix": _as_prefix,
    "fair": as_bool,
    "timeout": as_seconds,
    "connect_timeout": as_seconds,
    "wait_replicas": _as_count,
    "wait_timeout": as_seconds,
    "sentinel_username": str,
    "sentinel_password": str,
    "ssl_ca_certs": str,
    "ssl_cert_reqs": _as_cert_reqs,
}

Mode = Literal["single", "sentinel", "cluster", "client"]


def _expand(args: Sequence[Arg]) -> list[Any]:
    out: list[Any] = []
    for arg in args:
        if isinstance(arg, Encoded):
            out.extend(arg.args)
        else:
            out.append(arg)
    return out


class _Executor:
    """Runs scripts and commands on whatever connects lockkit to Redis."""

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        raise NotImplementedError

    async def execute(self, *args: Any) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


@final
class _FastExecutor(_Executor):
    def __init__(self, conn: RespConnection) -> None:
        self.conn = conn
        self.evalsha = conn.evalsha  # type: ignore[method-assign]
        self.execute = conn.execute  # type: ignore[method-assign]

    async def aclose(self) -> None:
        await self.conn.aclose()


@final
class _ClusterExecutor(_Executor):
    """Routes each script to the primary owning its keys' slot, over fast connections.

    The slot map comes from ``CLUSTER SLOTS`` and is read again on ``MOVED``/``ASK``
    (the command was not run: it is retried) and after a connection error (failover;
    the error is raised, since the command may have run).
    """

    def __init__(
        self, seeds: list[tuple[str, int]], make_conn: Callable[[str, int], RespConnection]
    ) -> None:
        self._seeds = seeds
        self._make_conn = make_conn
        self._conns: dict[tuple[str, int], RespConnection] = {}
        self._slots: list[tuple[int, int, tuple[str, int]]] = []
        self._refreshing: asyncio.Task[None] | None = None

    def _conn(self, addr: tuple[str, int]) -> RespConnection:
        conn = self._conns.get(addr)
        if conn is None:
            conn = self._conns[addr] = self._make_conn(*addr)
        return conn

    async def _refresh(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._read_slots())
        await asyncio.shield(self._refreshing)

    async def _read_slots(self) -> None:
        candidates = list(dict.fromkeys([*self._conns, *self._seeds]))
        last: Exception | None = None
        for addr in candidates:
            try:
                reply = await self._conn(addr).execute("CLUSTER", "SLOTS")
            except (OSError, RespError) as exc:
                last = exc
                continue
            slots = []
            for entry in reply:
                host = entry[2][0].decode() if entry[2][0] else addr[0]
                slots.append((int(entry[0]), int(entry[1]), (host, int(entry[2][1]))))
            self._slots = sorted(slots)
            return
        raise ConnectionError(f"no cluster node answered CLUSTER SLOTS: {last}")

    async def address_for(self, key: Arg) -> tuple[str, int]:
        """The primary serving ``key``'s slot, as the slot map last read says."""
        if not self._slots:
            await self._refresh()
        if isinstance(key, Encoded):
            key = key.args[0]
        slot = key_slot(key if isinstance(key, bytes) else str(key).encode())
        index = bisect.bisect_right(self._slots, (slot, 1 << 30)) - 1
        if index >= 0:
            start, end, addr = self._slots[index]
            if start <= slot <= end:
                return addr
        raise ConnectionError(f"no cluster node serves slot {slot}")

    async def refresh(self) -> None:
        await self._refresh()

    async def _node_for(self, key: Arg) -> RespConnection:
        return self._conn(await self.address_for(key))

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        for _ in range(4):
            conn = await self._node_for(keys[0])
            try:
                return await conn.evalsha(script, keys, args)
            except RespError as exc:
                if not str(exc).startswith(("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")):
                    raise
                await self._refresh()  # the command did not run: retry where it belongs
            except NotSentError:
                with contextlib.suppress(Exception):
                    await self._refresh()  # a dead node: retry if the map changed
            except OSError:
                with contextlib.suppress(Exception):
                    await self._refresh()
                raise  # it may have run: let the caller decide
        raise ConnectionError("the cluster kept redirecting or refusing; its slots are moving")

    async def execute(self, *args: Any) -> Any:
        if not self._slots:
            await self._refresh()
        return await self._conn(self._slots[0][2]).execute(*args)

    async def aclose(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        for conn in self._conns.values():
            await conn.aclose()


@final
class _ClientExecutor(_Executor):
    """Through a redis-py client (``Redis`` or ``RedisCluster``)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        flat_keys, flat_args = _expand(keys), _expand(args)
        try:
            return await self.client.evalsha(
                script.sha.decode(), len(flat_keys), *flat_keys, *flat_args
            )
        except redis_errors.NoScriptError:
            return await self.client.eval(
                script.source.decode(), len(flat_keys), *flat_keys, *flat_args
            )

    async def execute(self, *args: Any) -> Any:
        return await self.client.execute_command(*args)


#: What a driver or a socket raises; translated by :func:`_translate`.
_DRIVER_ERRORS = (RespError, redis_errors.RedisError, OSError, TimeoutError)


def _translate(exc: BaseException, what: str) -> LockError:
    """The lockkit error for a driver error met while trying to do ``what``."""
    refused = isinstance(
        exc,
        redis_errors.AuthenticationError | redis_errors.AuthenticationWrongNumberOfArgsError,
    ) or (isinstance(exc, RespError) and str(exc).startswith(("NOAUTH", "WRONGPASS")))
    if refused:
        return ConfigurationError(
            f"Redis refused the credentials while trying to {what}; check the username and password"
        )
    if isinstance(exc, RespError):
        return BackendUnavailable(f"Redis answered an error while trying to {what}: {exc}")
    return BackendUnavailable(f"Redis is unavailable; could not {what}: {exc}")


@contextlib.contextmanager
def _map_errors(what: str) -> Iterator[None]:
    try:
        yield
    except _DRIVER_ERRORS as exc:
        raise _translate(exc, what) from exc


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
        {Capability.FAIR, Capability.DISTRIBUTED, Capability.BATCH_RENEW, Capability.NOTIFY}
    )

    def __init__(
        self,
        *,
        mode: Mode,
        make_executor: Callable[[], _Executor],
        make_pubsub_client: Callable[[], tuple[Any, bool]],
        shown: str,
        prefix: str = "lockkit:",
        fair: bool = True,
        timeout: float = 5.0,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
        close_on_exit: Sequence[Any] = (),
        make_pubsub_connection: Callable[..., PubSubConnection] | None = None,
    ) -> None:
        self.mode = mode
        #: Cluster through lockkit's own connections: wake-ups go over sharded pub/sub,
        #: one channel per contended lock, in the lock's slot
        self._make_shard_conn = make_pubsub_connection
        self._shard_conns: dict[tuple[str, int], PubSubConnection] = {}
        self._shard_lock = anyio.Lock()
        self._by_channel: dict[bytes, _Waiters] = {}
        self.prefix = prefix
        self.fair = fair
        self.timeout = timeout
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        #: how long a waiter rides out an unreachable Redis (a failover) before raising
        self._outage_grace = max(10.0, 3 * timeout)
        self.client_id = secrets.token_hex(8)
        self._shown = shown
        self._make_executor = make_executor
        self._make_pubsub_client = make_pubsub_client
        self._close_on_exit = list(close_on_exit)
        self._exec: _Executor | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._waiters: dict[str, _Waiters] = {}
        self._owner_events: dict[str, anyio.Event] = {}
        #: wake-ups that arrived before their waiter registered (bounded)
        self._early: set[str] = set()
        self._reader_started = False
        self._subscribed = anyio.Event()
        self._waiting_changed = anyio.Event()
        self._orphans: list[tuple[str, str]] = []
        channel = f"{prefix}c:"
        self._channel = channel + self.client_id
        # a Lua string.format pattern: a '%' of the prefix must be doubled
        self._channel_format = channel.replace("%", "%%") + "%s"
        # a script's PUBLISH reaches every subscriber except on Cluster, where it stays
        # on the node that ran it: there the script returns whom to wake and we publish
        if make_pubsub_connection is not None:
            publish_in_script = b"2"
        else:
            publish_in_script = b"0" if mode == "cluster" else b"1"
        fair_flag = b"1" if fair else b"0"
        self._acquire_tail = Encoded(
            self.client_id,
            fair_flag,
            int(QUEUE_LEASE * 1000),
            int(FENCE_KEEP * 1000),
            self._channel_format,
            publish_in_script,
        )
        self._release_tail = Encoded(
            self.client_id,
            int(CLAIM_WINDOW * 1000),
            fair_flag,
            self._channel_format,
            publish_in_script,
        )
        self._keys_cache: dict[str, _Keys] = {}
        #: Commands sent, by kind; for tests and benchmarks.
        self.calls: dict[str, int] = {}

    # -- construction ----------------------------------------------------------------

    @classmethod
    def from_url(cls, url: LockURL, **options: Any) -> RedisBackend:
        opts = resolve_options("redis", OPTIONS, url.query, options)
        core = {
            k: opts.pop(k)
            for k in ("prefix", "fair", "timeout", "wait_replicas", "wait_timeout")
            if k in opts
        }
        connect_timeout = opts.pop("connect_timeout", 5.0)
        timeout = core.get("timeout", 5.0)
        if not url.hosts:
            raise ConfigurationError(f"a {url.scheme}:// URL needs at least one host")
        ssl_context: ssl.SSLContext | None = None
        redis_ssl: dict[str, Any] = {}
        if url.scheme == "rediss":
            ssl_context = ssl.create_default_context(cafile=opts.get("ssl_ca_certs"))
            reqs = opts.get("ssl_cert_reqs", "required")
            if reqs == "none":
                ssl_context.check_hostname = False
                ssl_context.verify_mode = ssl.CERT_NONE
            elif reqs == "optional":
                ssl_context.check_hostname = False
                ssl_context.verify_mode = ssl.CERT_OPTIONAL
            redis_ssl = {
                "ssl": True,
                "ssl_cert_reqs": reqs,
                "ssl_ca_certs": opts.get("ssl_ca_certs"),
            }
        common: dict[str, Any] = {
            "username": url.username,
            "password": url.password,
            "socket_timeout": timeout,
            "socket_connect_timeout": connect_timeout,
        }
        shown = str(url)

        connect = ConnectOptions(url.username, url.password, ssl_context, connect_timeout, timeout)

        def connection(
            address: Callable[[], Awaitable[tuple[str, int]]], db: int = 0
        ) -> RespConnection:
            return RespConnection(address, connect, db=db)

        if url.scheme in ("redis", "rediss"):
            if len(url.hosts) != 1:
                raise ConfigurationError(
                    f"a {url.scheme}:// URL names one server; use redis+sentinel:// or "
                    "redis+cluster:// for several"
                )
            host, port = url.hosts[0][0], url.hosts[0][1] or 6379
            db = _db(url.path, 0)

            def make_fast() -> _Executor:
                return _FastExecutor(connection(_fixed(host, port), db))

            def make_pubsub() -> tuple[Any, bool]:
                return aioredis.Redis(host=host, port=port, db=db, **common, **redis_ssl), True

            return cls(
                mode="single",
                make_executor=make_fast,
                make_pubsub_client=make_pubsub,
                shown=shown,
                **core,
            )
        if url.scheme == "redis+sentinel":
            parts = [p for p in url.path.split("/") if p]
            if not parts:
                raise ConfigurationError(
                    "a redis+sentinel:// URL ends with the service name: "
                    "redis+sentinel://host:26379/mymaster[/db]"
                )
            service = parts[0]
            db = _db("/" + parts[1] if len(parts) > 1 else "", 0)
            sentinel_kwargs: dict[str, Any] = {
                "socket_timeout": timeout,
                "socket_connect_timeout": connect_timeout,
            }
            if "sentinel_password" in opts:
                sentinel_kwargs["password"] = opts["sentinel_password"]
            if "sentinel_username" in opts:
                sentinel_kwargs["username"] = opts["sentinel_username"]
            hosts = [(h, p or 26379) for h, p in url.hosts]
            sentinel = Sentinel(  # type: ignore[no-untyped-call]
                hosts, sentinel_kwargs=sentinel_kwargs, db=db, **common, **redis_ssl
            )

            async def primary() -> tuple[str, int]:
                with _map_errors(f"find the primary of {service!r} through Sentinel"):
                    host, port = await sentinel.discover_master(service)
                return str(host), int(port)

            def make_primary() -> _Executor:
                return _FastExecutor(connection(primary, db))

            def make_pubsub() -> tuple[Any, bool]:
                return sentinel.master_for(service), True

            return cls(
                mode="sentinel",
                make_executor=make_primary,
                make_pubsub_client=make_pubsub,
                shown=shown,
                close_on_exit=[s for s in sentinel.sentinels],
                **core,
            )
        if url.scheme == "redis+cluster":
            seeds = [(h, p or 6379) for h, p in url.hosts]

            def make_conn(host: str, port: int) -> RespConnection:
                return connection(_fixed(host, port))

            def make_cluster() -> _Executor:
                return _ClusterExecutor(seeds, make_conn)

            def make_pubsub_connection(host: str, port: int, **callbacks: Any) -> PubSubConnection:
                return PubSubConnection(host, port, options=connect, **callbacks)

            def make_pubsub() -> tuple[Any, bool]:
                node = random.choice(url.hosts)
                return aioredis.Redis(
                    host=node[0], port=node[1] or 6379, **common, **redis_ssl
                ), True

            if core.get("wait_replicas"):
                raise ConfigurationError("wait_replicas is not supported on redis+cluster://")
            backend = cls(
                mode="cluster",
                make_executor=make_cluster,
                make_pubsub_connection=make_pubsub_connection,
                make_pubsub_client=make_pubsub,
                shown=shown,
                **core,
            )
            return backend
        raise ConfigurationError(
            f"the redis backend does not serve {url.scheme}://"
        )  # pragma: no cover

    @classmethod
    def from_client(cls, client: Any, **options: Any) -> RedisBackend:
        """Use the application's ``redis.asyncio.Redis`` or ``RedisCluster``.

        lockkit never closes ``client``; it opens one extra connection of its own for
        pub/sub (from the client's pool) and closes that.

        Args:
            client: the application's client.
            **options: ``prefix``, ``fair``, ``timeout``, ``wait_replicas``,
                ``wait_timeout`` as for URLs.
        """
        allowed = {
            k: OPTIONS[k] for k in ("prefix", "fair", "timeout", "wait_replicas", "wait_timeout")
        }
        opts = resolve_options("redis", allowed, {}, options)
        if opts.get("wait_replicas"):
            raise ConfigurationError(
                "wait_replicas needs lockkit's own connection (WAIT counts the writes of one "
                "connection): use a redis:// or redis+sentinel:// URL for it"
            )
        if isinstance(client, RedisCluster):
            nodes = client.get_nodes()

            def make_pubsub() -> tuple[Any, bool]:
                node = random.choice(nodes)
                kwargs = dict(client.connection_kwargs)
                kwargs.pop("host", None)
                kwargs.pop("port", None)
                return aioredis.Redis(host=node.host, port=int(node.port), **kwargs), True

            mode: Mode = "cluster"
        elif isinstance(client, aioredis.Redis):

            def make_pubsub() -> tuple[Any, bool]:
                return client, False

            mode = "client"
        else:
            raise ConfigurationError(
                "RedisBackend.from_client() takes a redis.asyncio.Redis or "
                f"redis.asyncio.RedisCluster, not {type(client).__name__}"
            )
        return cls(
            mode=mode,
            make_executor=lambda: _ClientExecutor(client),
            make_pubsub_client=make_pubsub,
            shown=f"{type(client).__name__} given by the application",
            **opts,
        )

    # -- lifecycle -------------------------------------------------------------------

    async def aopen(self, clock: Clock) -> None:
        await super().aopen(clock)
        async with contextlib.AsyncExitStack() as stack:
            self._exec = self._make_executor()
            stack.push_async_callback(self._close_executor)
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(self._tg.cancel_scope.cancel)
            self._tg.start_soon(self._keep_queue_alive, name="lockkit-redis-queue-keeper")
            self._stack = stack.pop_all()

    async def _close_executor(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._exec is not None:
                await self._exec.aclose()
            for conn in self._shard_conns.values():
                conn.close()
            self._shard_conns.clear()
            for resource in self._close_on_exit:
                with contextlib.suppress(Exception):
                    await resource.aclose()

    async def aclose(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    # -- plumbing --------------------------------------------------------------------

    def keys(self, name: str) -> _Keys:
        """The keys that hold lock ``name`` (for tests and operators)."""
        keys = self._keys_cache.get(name)
        if keys is None:
            if len(self._keys_cache) >= 4096:
                self._keys_cache.clear()
            keys = self._keys_cache[name] = _Keys(f"{self.prefix}{{{_encode_name(name)}}}")
        return keys

    async def _eval(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        executor = self._exec
        if executor is None:
            raise RuntimeError("the Redis backend is not open")
        self.calls[script.name] = self.calls.get(script.name, 0) + 1
        try:  # each connection enforces the command timeout itself
            return await executor.evalsha(script, keys, args)
        except _DRIVER_ERRORS as exc:
            raise _translate(exc, f"run the {script.name} script") from exc

    async def _try(self, keys: _Keys, owner: str, ttl: float, queue: bool) -> tuple[bool, int, int]:
        ttl_ms = max(1, math.ceil(ttl * 1000))
        mode = b"1" if queue else b"0"
        reply = await self._eval(
            ACQUIRE, (keys.encoded,), (owner, ttl_ms, mode, self._acquire_tail)
        )
        if reply[0] == 1:
            return True, int(reply[1]), 0
        if len(reply) > 3:
            await self._wake(reply[3], reply[4])
        return False, int(reply[1]), int(reply[2])

    async def _confirm_replicas(self, keys: _Keys, owner: str) -> None:
        if not self.wait_replicas:
            return
        assert self._exec is not None
        with _map_errors("wait for replicas"):
            acked = await self._exec.execute(
                "WAIT", self.wait_replicas, int(self.wait_timeout * 1000)
            )
        if int(acked) < self.wait_replicas:
            await self._leave(keys, owner, last=True)
            raise BackendUnavailable(
                f"only {acked} of {self.wait_replicas} replicas confirmed the grant within "
                f"{self.wait_timeout:g}s; the lock was released again"
            )

    # -- primitives ------------------------------------------------------------------

    async def acquire(self, name: str, owner: str, *, ttl: float, timeout: float | None) -> Grant:
        keys = self.keys(name)
        started = self.clock.now()
        if timeout == 0:
            try:
                ok, value, _ = await self._try(keys, owner, ttl, queue=False)
                if not ok:
                    raise LockTimeout(name, 0)
                await self._confirm_replicas(keys, owner)
            except BaseException as exc:
                if not isinstance(exc, LockTimeout):
                    await self._leave_shielded(keys, owner, last=False)
                raise
            return Grant(value, started)
        try:  # fast path: a free lock costs one round trip and no local bookkeeping
            ok, value, rank = await self._try(keys, owner, ttl, queue=True)
            if ok:
                await self._confirm_replicas(keys, owner)
                return Grant(value, started)
        except BaseException:
            await self._leave_shielded(keys, owner, last=keys.base not in self._waiters)
            raise
        return await self._wait(name, keys, owner, ttl, timeout, started, (value, rank))

    async def _wait(
        self,
        name: str,
        keys: _Keys,
        owner: str,
        ttl: float,
        timeout: float | None,
        started: float,
        queued: tuple[int, int],
    ) -> Grant:
        """Wait in the queue the fast path already put ``owner`` in; ``queued`` is its
        answer (holder's pttl, rank)."""
        deadline = math.inf if timeout is None else started + timeout
        local = self._waiters.get(keys.base)
        if local is None:
            local = self._waiters[keys.base] = _Waiters(keys)
            self._waiting_changed.set()
        fallback = min(5.0, max(0.5, ttl / 2))
        value, rank = queued
        event = self._owner_events[owner] = local.events[owner] = anyio.Event()
        if owner in self._early:  # woken before we got here
            self._early.discard(owner)
            event.set()
        ask = False
        outage_since = 0.0
        try:
            while True:
                if ask:
                    # register before asking, so a wake-up sent while we ask is not lost
                    event = self._owner_events[owner] = local.events[owner] = anyio.Event()
                    started = self.clock.now()
                    try:
                        ok, value, rank = await self._try(keys, owner, ttl, queue=True)
                    except BackendUnavailable:
                        # a waiter rides out a short outage (failover) before giving up
                        outage_since = outage_since or started
                        if started - outage_since > self._outage_grace or started >= deadline:
                            raise
                        await anyio.sleep(min(0.25, max(0.0, deadline - started)))
                        continue
                    outage_since = 0.0
                    if ok:
                        break
                ask = True
                if self._make_shard_conn is not None:
                    if not local.listening and await self._listen(local):
                        continue  # a release may have passed before we listened: ask again
                elif not self._subscribed.is_set():
                    await self._subscribe()
                    continue  # a release may have passed before we listened: ask again
                now = self.clock.now()
                if now >= deadline:
                    raise LockTimeout(name, timeout if timeout is not None else math.inf)
                if rank == 0 and value > 0:  # first in line: look again when the lease ends
                    bound = now + value / 1000 + 0.001
                elif self._make_shard_conn is not None and not local.listening:
                    bound = now + 0.5  # not listening yet (node down?): look again soon
                else:  # only a lost message leaves us here: a slow, jittered re-check
                    bound = now + fallback * random.uniform(1.0, 1.5)
                await self.clock.wait(event, min(bound, deadline))
            await self._confirm_replicas(keys, owner)
            return Grant(value, started)
        except BaseException:
            local.events.pop(owner, None)
            await self._leave_shielded(keys, owner, last=not local.events)
            raise
        finally:
            local.events.pop(owner, None)
            self._owner_events.pop(owner, None)
            if not local.events and self._waiters.get(keys.base) is local:
                del self._waiters[keys.base]
                self._stop_listening(local)

    async def _leave_shielded(self, keys: _Keys, owner: str, *, last: bool) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self._leave(keys, owner, last=last)
            except Exception as exc:  # retried by the queue keeper
                logger.warning("could not clean up after a waiter on %s: %s", keys.base, exc)
                self._orphans.append((keys.base, owner))
                self._waiting_changed.set()  # let the keeper retry it

    async def _leave(self, keys: _Keys, owner: str, *, last: bool) -> bool:
        reply = await self._eval(
            RELEASE, (keys.encoded,), (owner, b"1" if last else b"0", self._release_tail)
        )
        if isinstance(reply, list):
            await self._wake(reply[0], reply[1])
            return True
        return bool(reply)

    async def _wake(self, channel: bytes | str, owner: bytes | str) -> None:
        assert self._exec is not None
        self.calls["publish"] = self.calls.get("publish", 0) + 1
        try:
            with _map_errors("wake the next waiter"), anyio.fail_after(self.timeout):
                await self._exec.execute("PUBLISH", channel, owner)
        except BackendUnavailable as exc:  # it re-checks when its fallback timer fires
            logger.info("could not wake the next waiter: %s", exc)

    async def release(self, name: str, owner: str) -> bool:
        return await self._leave(self.keys(name), owner, last=False)

    async def extend(self, name: str, owner: str, *, ttl: float) -> bool:
        key = self.keys(name).all[0]
        reply = await self._eval(EXTEND, [key], [owner, max(1, math.ceil(ttl * 1000))])
        return bool(reply[0])

    async def extend_many(self, renewals: Sequence[Renewal]) -> list[bool | BaseException]:
        groups: dict[Any, list[int]] = {}
        if self.mode == "cluster":
            for i, r in enumerate(renewals):
                slot = key_slot(self.keys(r.name).all[0].encode())
                groups.setdefault(slot, []).append(i)
        else:
            groups[None] = list(range(len(renewals)))
        chunks = [idx[i : i + BATCH] for idx in groups.values() for i in range(0, len(idx), BATCH)]
        results: list[bool | BaseException] = [False] * len(renewals)

        async def run(chunk: list[int]) -> None:
            keys = [self.keys(renewals[i].name).all[0] for i in chunk]
            args: list[Any] = [renewals[i].owner for i in chunk]
            args += [max(1, math.ceil(renewals[i].ttl * 1000)) for i in chunk]
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
        keys = self.keys(name).all
        holder_value, pttl, token, queued = await self._eval(INSPECT, keys[:3], [])
        holder = None
        if holder_value:
            owner = holder_value.decode() if isinstance(holder_value, bytes) else str(holder_value)
            holder = HolderInfo(
                owner.lstrip("~"), int(token or 0), pttl / 1000 if pttl >= 0 else None
            )
        return LockInfo(name, holder, int(queued))

    # -- notifications ---------------------------------------------------------------

    async def _subscribe(self) -> None:
        if not self._reader_started:
            self._reader_started = True
            assert self._tg is not None
            self._tg.start_soon(self._read_messages, name="lockkit-redis-pubsub")
        with anyio.fail_after(self.timeout + 5):
            await self._subscribed.wait()

    async def _read_messages(self) -> None:
        """Keep one subscription to this client's channel; route wake-ups to waiters."""
        delay = 0.05
        while True:
            client, owned = self._make_pubsub_client()
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    kind = message["type"]
                    if kind == "message":
                        data = message["data"]
                        self._route(data.decode() if isinstance(data, bytes) else str(data))
                    elif kind == "subscribe":
                        delay = 0.05
                        self._subscribed.set()
                        self._wake_all()  # messages may have been missed while away
            except (redis_errors.RedisError, OSError) as exc:
                if self._subscribed.is_set():
                    logger.warning("Redis pub/sub connection lost, reconnecting: %s", exc)
                self._subscribed = anyio.Event()
                await anyio.sleep(delay * random.uniform(1, 2))
                delay = min(delay * 2, 2.0)
            finally:
                with anyio.CancelScope(shield=True):
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
                    if owned:
                        with contextlib.suppress(Exception):
                            await client.aclose()

    # -- sharded notifications (Cluster) ---------------------------------------------

    async def _listen(self, local: _Waiters) -> bool:
        """Subscribe to ``local``'s lock channel on the node serving its slot. True once
        confirmed; False (logged) if the node cannot be reached: waiters then re-check
        on a short timer and try again."""
        executor = self._exec
        assert isinstance(executor, _ClusterExecutor) and self._make_shard_conn is not None
        base = local.keys.base
        local.channel = f"{base}:c:{self.client_id}".encode()
        try:
            for attempt in range(2):
                addr = await executor.address_for(local.keys.all[0])
                conn = await self._shard_conn(addr)
                try:
                    await conn.subscribe(local.channel, sharded=True)
                except RespError as exc:  # MOVED: the slot map is stale
                    if attempt or not str(exc).startswith(("MOVED", "ASK")):
                        raise
                    await executor.refresh()
                    continue
                self.calls["ssubscribe"] = self.calls.get("ssubscribe", 0) + 1
                if self._waiters.get(base) is local:
                    local.listening = True
                    local.node = addr
                    self._by_channel[local.channel] = local
                else:  # everyone left meanwhile
                    conn.unsubscribe(local.channel, sharded=True)
                return True
        except (OSError, RespError, TimeoutError) as exc:
            logger.info("cannot listen for wake-ups on %s yet: %s", base, exc)
            with contextlib.suppress(Exception):
                await executor.refresh()
        return False

    async def _shard_conn(self, addr: tuple[str, int]) -> PubSubConnection:
        async with self._shard_lock:
            conn = self._shard_conns.get(addr)
            if conn is None:
                assert self._make_shard_conn is not None
                conn = self._make_shard_conn(
                    *addr,
                    on_message=self._on_shard_message,
                    on_kicked=self._on_kicked,
                    on_lost=lambda exc, addr=addr: self._on_shard_lost(addr, exc),
                )
                await conn.connect()
                self._shard_conns[addr] = conn
            return conn

    def _stop_listening(self, local: _Waiters) -> None:
        if not local.listening:
            return
        local.listening = False
        self._by_channel.pop(local.channel, None)
        conn = self._shard_conns.get(local.node) if local.node else None
        if conn is not None:
            conn.unsubscribe(local.channel, sharded=True)

    def _on_shard_message(self, channel: bytes, data: bytes) -> None:
        self._route(data.decode())

    def _on_kicked(self, channel: bytes) -> None:
        local = self._by_channel.pop(channel, None)
        if local is not None:  # its slot moved: listen again where it went
            local.listening = False
            for event in local.events.values():
                event.set()

    def _on_shard_lost(self, addr: tuple[str, int], exc: Exception) -> None:
        conn = self._shard_conns.pop(addr, None)
        if conn is None:
            return
        logger.warning("sharded pub/sub connection to %s:%d lost: %s", *addr, exc)
        for channel, local in list(self._by_channel.items()):
            if local.node == addr:
                self._on_kicked(channel)  # its waiters re-check and listen again

    def _route(self, owner: str) -> None:
        event = self._owner_events.get(owner)
        if event is not None:
            event.set()
        else:
            if len(self._early) >= 1024:
                self._early.clear()
            self._early.add(owner)

    def _wake_all(self) -> None:
        for event in self._owner_events.values():
            event.set()

    async def _keep_queue_alive(self) -> None:
        """While this client has waiters, refresh their queue entries once a second."""
        while True:
            if not self._waiters and not self._orphans:
                self._waiting_changed = anyio.Event()
                await self._waiting_changed.wait()
            await anyio.sleep(QUEUE_LEASE / 3)
            await self._retry_orphans()
            bases = [w.keys for w in self._waiters.values()]
            groups: dict[Any, list[_Keys]] = {}
            for keys in bases:
                group = None
                if self.mode == "cluster":
                    group = key_slot(keys.all[0].encode())
                groups.setdefault(group, []).append(keys)
            for members in groups.values():
                for i in range(0, len(members), BATCH):
                    chunk = members[i : i + BATCH]
                    flat = [k for keys in chunk for k in (keys.all[2], keys.all[3])]
                    try:
                        await self._eval(REFRESH, flat, [self.client_id, int(QUEUE_LEASE * 1000)])
                    except BackendUnavailable as exc:
                        logger.info("could not refresh queue entries: %s", exc)

    async def _retry_orphans(self) -> None:
        orphans, self._orphans = self._orphans, []
        for base, owner in orphans:
            try:
                await self._leave(_Keys(base), owner, last=base not in self._waiters)
            except BackendUnavailable:
                self._orphans.append((base, owner))

    def __repr__(self) -> str:
        return f"<RedisBackend {self.mode} {self._shown}>"


def _fixed(host: str, port: int) -> Callable[[], Awaitable[tuple[str, int]]]:
    async def address() -> tuple[str, int]:
        return host, port

    return address


def _db(path: str, default: int) -> int:
    text = path.strip("/")
    if not text:
        return default
    if not text.isdigit():
        raise ConfigurationError(f"the database in a Redis URL is a number, got {text!r}")
    return int(text)
