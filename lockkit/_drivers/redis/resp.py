"""A small, pipelined Redis connection for the lock hot path, and a subscriber.

Every lock operation is one ``EVALSHA``. Going through a general-purpose client costs
more in Python than the round trip itself on a local network, so the Redis backend
sends its scripts over :class:`RespConnection`: one socket, requests written as soon as
they are made, replies parsed by hiredis and matched to callers in order. Many
concurrent callers therefore share one connection and their requests travel together.

A caller that is cancelled while waiting leaves its slot in the queue; the reply is
read and dropped when it arrives, so cancellation never desynchronises the stream.

:class:`PubSubConnection` is the same protocol in subscribe mode (sharded wake-ups on
Cluster). Both open their socket, TLS and ``AUTH`` through one routine, :func:`_open`,
and share one reply protocol, :class:`_ReplyProtocol`.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import hashlib
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, final

import hiredis

if TYPE_CHECKING:
    from ..._core._options import TlsOptions

__all__ = (
    "Address",
    "Arg",
    "AuthError",
    "ConnectOptions",
    "Encoded",
    "NotSentError",
    "PubSubConnection",
    "RespConnection",
    "RespError",
    "Script",
    "fixed",
)


class RespError(Exception):
    """An error reply from the server (``-ERR ...``)."""


class AuthError(RespError):
    """The server answered ``AUTH`` with an error: the credentials were refused."""


class NotSentError(ConnectionError):
    """The connection could not be made: the command was not sent, so retrying is safe."""


@final
@dataclasses.dataclass(frozen=True, slots=True)
class ConnectOptions:
    """How to reach and log in to a server; shared by every connection kind."""

    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    #: the TLS settings (``rediss://``) and the context made from them
    tls: TlsOptions | None = None
    ssl_context: ssl.SSLContext | None = dataclasses.field(default=None, repr=False)
    connect_timeout: float = 5.0
    #: seconds a command may wait for its reply
    timeout: float = 5.0

    def auth_command(self) -> list[Arg] | None:
        """``AUTH [user] password``, or None without a password."""
        if self.password is None:
            return None
        return ["AUTH", *([self.username] if self.username else []), self.password]


@final
class Script:
    """A Lua script known by its SHA1."""

    __slots__ = ("head", "name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest().encode()
        #: ``EVALSHA <sha>`` encoded once (the command's first two arguments)
        self.head = b"$7\r\nEVALSHA\r\n$%d\r\n%b\r\n" % (len(self.sha), self.sha)


@final
class Encoded:
    """A run of arguments encoded once and reused (keys of a lock, constant options)."""

    __slots__ = ("args", "count", "data")

    def __init__(self, *args: bytes | str | int) -> None:
        self.args = args
        self.count = len(args)
        self.data = _encode(args)[len(b"*%d\r\n" % len(args)) :]


Arg = bytes | str | int | float | Encoded
#: Where to connect, asked at every (re)connect (a Sentinel looks the primary up again).
Address = Callable[[], Awaitable[tuple[str, int]]]


def fixed(node: tuple[str, int]) -> Address:
    """The :data:`Address` of a server that does not move."""

    async def address() -> tuple[str, int]:
        return node

    return address


def _encode(args: Sequence[Arg]) -> bytes:
    count, parts = _encode_parts(args, [b""])
    parts[0] = b"*%d\r\n" % count
    return b"".join(parts)


def _encode_parts(args: Sequence[Arg], parts: list[bytes]) -> tuple[int, list[bytes]]:
    """Append the bulk strings of ``args`` to ``parts``; returns how many there are.
    Dispatches on the exact type first (the hot path), then on subclasses."""
    count = 0
    append = parts.append
    for arg in args:
        if type(arg) is str:
            data = arg.encode()
        elif type(arg) is bytes:
            data = arg
        elif isinstance(arg, Encoded):
            count += arg.count
            append(arg.data)
            continue
        elif isinstance(arg, int):
            data = b"%d" % arg
        elif isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = repr(arg).encode()
        count += 1
        append(b"$%d\r\n%b\r\n" % (len(data), data))
    return count, parts


def _evalsha(script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> bytes:
    """``EVALSHA sha numkeys keys... args...`` encoded (the script's head is cached)."""
    nkeys, parts = _encode_parts(keys, [b"", script.head, b""])
    parts[2] = b"$%d\r\n%d\r\n" % (len(b"%d" % nkeys), nkeys)
    count, parts = _encode_parts(args, parts)
    parts[0] = b"*%d\r\n" % (nkeys + count + 3)
    return b"".join(parts)


class _ReplyProtocol(asyncio.Protocol):
    """Requests written at once, replies matched to them in order. No reply within
    ``timeout`` seconds drops the connection and fails every caller."""

    def __init__(self, timeout: float) -> None:
        self.reader = hiredis.Reader(replyError=RespError)
        #: one entry per request in flight; None for a reply nobody waits for
        self.pending: collections.deque[asyncio.Future[Any] | None] = collections.deque()
        self.sent_at: collections.deque[float] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.timeout = timeout
        self.timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()

    def send(self, data: bytes) -> asyncio.Future[Any]:
        """Write one request; its reply resolves the returned future."""
        fut = self.loop.create_future()
        self.post(data, fut)
        return fut

    def post(self, data: bytes, fut: asyncio.Future[Any] | None) -> None:
        """Write one request; its reply resolves ``fut`` (None: nobody waits for it)."""
        if self.closed or self.transport is None:
            raise ConnectionError("connection to Redis lost")
        self.transport.write(data)
        self.pending.append(fut)
        self.sent_at.append(self.loop.time())
        if self.timer is None:
            self.timer = self.loop.call_later(self.timeout, self._check)

    def _check(self) -> None:
        self.timer = None
        if not self.sent_at:
            return
        late = self.loop.time() - self.sent_at[0]
        if late >= self.timeout:
            self.abort(TimeoutError(f"no reply from Redis in {self.timeout:g}s"))
        else:
            self.timer = self.loop.call_later(self.timeout - late, self._check)

    def abort(self, exc: Exception) -> None:
        self._fail(exc)
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.sent_at.clear()
        while self.pending:
            fut = self.pending.popleft()
            if fut is not None and not fut.done():
                fut.set_exception(exc)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            self.reply(reply)

    def reply(self, reply: Any) -> None:
        """One reply: resolve the oldest request's future."""
        fut = self.pending.popleft()
        self.sent_at.popleft()
        if fut is not None and not fut.done():
            if isinstance(reply, RespError):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection to Redis lost: {exc or 'closed by the server'}"))


P = TypeVar("P", bound=_ReplyProtocol)


async def _open(
    host: str,
    port: int,
    options: ConnectOptions,
    factory: Callable[[], P],
    hello: Sequence[list[Arg]] = (),
) -> P:
    """Connect (TLS if configured), log in, then send ``hello``; closed again if any of
    it fails or is cancelled."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(options.connect_timeout):
        _, protocol = await loop.create_connection(factory, host, port, ssl=options.ssl_context)
    try:
        if (auth := options.auth_command()) is not None:
            try:
                await protocol.send(_encode(auth))
            except RespError as exc:  # whatever the wording (WRONGPASS, no password set...)
                raise AuthError(str(exc)) from None
        for command in hello:
            await protocol.send(_encode(command))
    except BaseException:
        protocol.close()
        raise
    return protocol


class _Protocol(_ReplyProtocol):
    def __init__(self, on_lost: Callable[[_Protocol], None], timeout: float) -> None:
        super().__init__(timeout)
        self._on_lost = on_lost

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._on_lost(self)


@final
class RespConnection:
    """One lazily (re)connected socket to one Redis server.

    ``address`` is asked at every (re)connect, so a Sentinel-resolved primary is looked
    up again after a failover. A connection whose opener was cancelled is adopted when
    it completes (or closed, if this object was closed meanwhile): nothing leaks.
    """

    def __init__(self, address: Address, options: ConnectOptions, *, db: int = 0) -> None:
        self._address = address
        self._options = options
        self._db = db
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None
        self._closed = False
        #: bumped by :meth:`drop`: a connect begun before it is not adopted
        self._generation = 0
        #: scripts being loaded, by SHA1, shared by the requests that need them
        self._loads: dict[bytes | str, asyncio.Future[Any]] = {}

    async def _connect(self) -> _Protocol:
        generation = self._generation
        host, port = await self._address()
        options = self._options
        hello: list[list[Arg]] = [["SELECT", self._db]] if self._db else []
        protocol = await _open(
            host, port, options, lambda: _Protocol(self._lost, options.timeout), hello
        )
        if generation != self._generation:
            protocol.close()
            raise NotSentError(f"{host}:{port} was dropped while connecting")
        return protocol

    def drop(self, reason: str) -> None:
        """Close the socket now (requests in flight fail) and forget a connect in
        progress; the next request connects again, asking ``address`` anew."""
        self._generation += 1
        self._connecting = None
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.abort(ConnectionError(f"connection to Redis dropped: {reason}"))

    def _lost(self, protocol: _Protocol) -> None:
        if self._protocol is protocol:
            self._protocol = None

    def _connected(self, task: asyncio.Task[_Protocol]) -> None:
        """Adopt what a connect task made, whether or not anyone still waits for it."""
        if self._connecting is task:
            self._connecting = None
        if task.cancelled() or task.exception() is not None:
            return  # the exception is retrieved: the waiters get it through shield()
        protocol = task.result()
        if self._closed:
            protocol.close()
        else:
            self._protocol = protocol

    async def _get(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            return protocol
        if self._closed:
            raise NotSentError("the connection is closed")
        task = self._connecting
        if task is None:
            task = self._connecting = asyncio.ensure_future(self._connect())
            task.add_done_callback(self._connected)
        try:
            return await asyncio.shield(task)
        except (OSError, TimeoutError) as exc:
            raise NotSentError(str(exc) or type(exc).__name__) from exc

    async def execute(self, *args: Arg) -> Any:
        """Send one command and return its reply (error replies raise RespError)."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._get()
        return await protocol.send(_encode(args))

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run ``script``, loading it first if the server does not know it. ``keys``
        may be one :class:`Encoded` run of several keys."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._get()
        command = _evalsha(script, keys, args)
        try:
            return await protocol.send(command)
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self._load(script)
        protocol = await self._get()
        return await protocol.send(command)

    async def _load(self, script: Script) -> None:
        """Load ``script`` once for every request that found it missing at the same time
        (after a failover or restart, each pipelined request gets its own NOSCRIPT)."""
        load = self._loads.get(script.sha)
        if load is None:
            load = self._loads[script.sha] = asyncio.ensure_future(
                self.execute(b"SCRIPT", b"LOAD", script.source)
            )
            load.add_done_callback(functools.partial(self._loaded, script.sha))
        await asyncio.shield(load)

    def _loaded(self, sha: bytes | str, load: asyncio.Future[Any]) -> None:
        # forgotten once done: a later NOSCRIPT (SCRIPT FLUSH, a new server) loads again
        self._loads.pop(sha, None)
        if not load.cancelled():
            load.exception()  # retrieved here: every asker that is left gets it too

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()  # _connected closes it if it completes anyway
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.close()

    def __repr__(self) -> str:
        state = "connected" if self._protocol is not None else "idle"
        return f"<RespConnection {state}>"


class _PubSubProtocol(_ReplyProtocol):
    """Subscribe mode: replies to our commands come back in order, interleaved with
    pushed messages and with unsubscriptions the server made on its own."""

    def __init__(self, owner: PubSubConnection, timeout: float) -> None:
        super().__init__(timeout)
        self.owner = owner
        #: (kind, channel) of each command in flight, to tell our unsubscribes from kicks
        self.asked: collections.deque[tuple[bytes, bytes]] = collections.deque()

    def post(
        self, data: bytes, fut: asyncio.Future[Any] | None, asked: tuple[bytes, bytes] = (b"", b"")
    ) -> None:
        super().post(data, fut)
        self.asked.append(asked)

    def reply(self, reply: Any) -> None:
        if isinstance(reply, list) and reply and reply[0] in (b"message", b"smessage"):
            self.owner.on_message(reply[1], reply[2])
            return
        if (
            isinstance(reply, list)
            and reply
            and reply[0] in (b"unsubscribe", b"sunsubscribe")
            and not (self.asked and self.asked[0] == (reply[0], reply[1]))
        ):
            self.owner.on_kicked(reply[1])  # the server dropped it (slot moved away)
            return
        if not self.pending:  # pragma: no cover - nothing we asked for
            return
        self.asked.popleft()
        super().reply(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.owner.on_lost(ConnectionError(f"pub/sub connection lost: {exc or 'closed'}"))


@final
class PubSubConnection:
    """One subscribe-mode socket to one server (a Cluster node, for sharded channels).

    ``on_message(channel, data)`` gets every message, ``on_kicked(channel)`` every
    subscription the server dropped on its own, ``on_lost(exc)`` the end of the
    connection; after that the object is dead and a new one must be made.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        on_message: Callable[[bytes, bytes], None],
        on_kicked: Callable[[bytes], None],
        on_lost: Callable[[Exception], None],
        options: ConnectOptions,
    ) -> None:
        self.address = (host, port)
        self.on_message = on_message
        self.on_kicked = on_kicked
        self.on_lost = on_lost
        self._options = options
        self._protocol: _PubSubProtocol | None = None

    async def connect(self) -> None:
        timeout = self._options.timeout
        self._protocol = await _open(
            *self.address, self._options, lambda: _PubSubProtocol(self, timeout)
        )

    def _post(self, kind: bytes, channel: bytes, fut: asyncio.Future[Any] | None) -> bool:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            return False
        protocol.post(_encode([kind.upper(), channel]), fut, (kind, channel))
        return True

    async def subscribe(self, channel: bytes, *, sharded: bool) -> None:
        """Subscribe and return once the server confirmed (errors such as MOVED raise)."""
        kind = b"ssubscribe" if sharded else b"subscribe"
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._post(kind, channel, fut):
            raise ConnectionError("pub/sub connection lost")
        await fut

    def unsubscribe(self, channel: bytes, *, sharded: bool) -> None:
        """Ask to unsubscribe; the confirmation is not awaited."""
        self._post(b"sunsubscribe" if sharded else b"unsubscribe", channel, None)

    def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.close()
