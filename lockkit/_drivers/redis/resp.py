"""A small, pipelined Redis connection for the lock hot path.

Every lock operation is one ``EVALSHA``. Going through a general-purpose client costs
more in Python than the round trip itself on a local network, so the Redis backend
sends its scripts over this connection: one socket, requests written as soon as they
are made, replies parsed by hiredis and matched to callers in order. Many concurrent
callers therefore share one connection and their requests travel together.

A caller that is cancelled while waiting leaves its slot in the queue; the reply is
read and dropped when it arrives, so cancellation never desynchronises the stream.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import ssl
from collections.abc import Callable, Sequence
from typing import Any, final

import hiredis

__all__ = (
    "ConnectOptions",
    "Encoded",
    "NotSentError",
    "PubSubConnection",
    "RespConnection",
    "RespError",
    "Script",
)


class RespError(Exception):
    """An error reply from the server (``-ERR ...``)."""


@final
@dataclasses.dataclass(frozen=True, slots=True)
class ConnectOptions:
    """How to reach and log in to a server; shared by both connection kinds."""

    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = None
    connect_timeout: float = 5.0
    #: seconds a command may wait for its reply
    timeout: float = 5.0

    def auth_command(self) -> list[Arg] | None:
        """``AUTH [user] password``, or None without a password."""
        if self.password is None:
            return None
        return ["AUTH", *([self.username] if self.username else []), self.password]


class NotSentError(ConnectionError):
    """The connection could not be made: the command was not sent, so retrying is safe."""


@final
class Script:
    """A Lua script known by its SHA1."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest().encode()


@final
class Encoded:
    """A run of arguments encoded once and reused (keys of a lock, constant options)."""

    __slots__ = ("args", "count", "data")

    def __init__(self, *args: bytes | str | int) -> None:
        self.args = args
        self.count = len(args)
        self.data = _encode(args)[len(b"*%d\r\n" % len(args)) :]


Arg = bytes | str | int | float | Encoded


def _encode(args: Sequence[Arg]) -> bytes:
    count = 0
    parts = [b""]
    append = parts.append
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, Encoded):
            count += arg.count
            append(arg.data)
            continue
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = repr(arg).encode()
        count += 1
        append(b"$%d\r\n%b\r\n" % (len(data), data))
    parts[0] = b"*%d\r\n" % count
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self, on_lost: Any, timeout: float) -> None:
        self.reader = hiredis.Reader(replyError=RespError)
        self.pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.sent_at: collections.deque[float] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.timeout = timeout
        self.timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()
        self._on_lost = on_lost

    def send(self, data: bytes) -> asyncio.Future[Any]:
        """Write one request; its reply resolves the returned future."""
        if self.closed or self.transport is None:
            raise ConnectionError("connection to Redis lost")
        fut = self.loop.create_future()
        self.transport.write(data)
        self.pending.append(fut)
        self.sent_at.append(self.loop.time())
        if self.timer is None:
            self.timer = self.loop.call_later(self.timeout, self._check)
        return fut

    def _check(self) -> None:
        """No reply for ``timeout`` seconds: drop the connection, failing every caller."""
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

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.sent_at.clear()
        while self.pending:
            fut = self.pending.popleft()
            if not fut.done():
                fut.set_exception(exc)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.pending
        sent_at = self.sent_at
        while (reply := self.reader.gets()) is not False:
            fut = pending.popleft()
            sent_at.popleft()
            if not fut.done():
                if isinstance(reply, RespError):
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection to Redis lost: {exc or 'closed by the server'}"))
        self._on_lost(self)


@final
class RespConnection:
    """One lazily (re)connected socket to one Redis server.

    ``address`` is a callable returning ``(host, port)``, asked at every (re)connect, so
    a Sentinel-resolved primary is looked up again after a failover.
    """

    def __init__(self, address: Any, options: ConnectOptions, *, db: int = 0) -> None:
        self._address = address
        self._options = options
        self._db = db
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None
        self._closed = False

    async def _connect(self) -> _Protocol:
        host, port = await self._address()
        options = self._options
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(options.connect_timeout):
            _, protocol = await loop.create_connection(
                lambda: _Protocol(self._lost, options.timeout), host, port, ssl=options.ssl_context
            )
        assert isinstance(protocol, _Protocol)
        hello: list[list[Arg]] = []
        if (auth := options.auth_command()) is not None:
            hello.append(auth)
        if self._db:
            hello.append(["SELECT", self._db])
        try:
            for command in hello:
                await protocol.send(_encode(command))
        except BaseException:
            if protocol.transport is not None:
                protocol.transport.close()
            raise
        return protocol

    def _lost(self, protocol: _Protocol) -> None:
        if self._protocol is protocol:
            self._protocol = None

    async def _get(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            return protocol
        if self._closed:
            raise ConnectionError("the connection is closed")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        task = self._connecting
        try:
            protocol = await asyncio.shield(task)
        except (OSError, TimeoutError) as exc:
            raise NotSentError(str(exc) or type(exc).__name__) from exc
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None
        self._protocol = protocol
        return protocol

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
        nkeys = sum(k.count if isinstance(k, Encoded) else 1 for k in keys)
        command = _encode((b"EVALSHA", script.sha, nkeys, *keys, *args))
        try:
            return await protocol.send(command)
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self.execute(b"SCRIPT", b"LOAD", script.source)
        protocol = await self._get()
        return await protocol.send(command)

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()

    def __repr__(self) -> str:
        state = "connected" if self._protocol is not None else "idle"
        return f"<RespConnection {state}>"


class _PubSubProtocol(asyncio.Protocol):
    """A connection in subscribe mode: replies to our commands come back in order,
    interleaved with pushed messages."""

    def __init__(self, owner: PubSubConnection) -> None:
        self.owner = owner
        self.reader = hiredis.Reader(replyError=RespError)
        self.transport: asyncio.Transport | None = None
        #: commands awaiting their reply: (kind, channel) and the future to resolve
        self.pending: collections.deque[tuple[bytes, bytes, asyncio.Future[Any] | None]] = (
            collections.deque()
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            self._dispatch(reply)

    def _dispatch(self, reply: Any) -> None:
        if isinstance(reply, list) and reply and reply[0] in (b"message", b"smessage"):
            self.owner.on_message(reply[1], reply[2])
            return
        if (
            isinstance(reply, list)
            and reply
            and reply[0] in (b"unsubscribe", b"sunsubscribe")
            and not (self.pending and self.pending[0][:2] == (reply[0], reply[1]))
        ):
            self.owner.on_kicked(reply[1])  # the server dropped it (slot moved away)
            return
        if not self.pending:  # pragma: no cover - nothing we asked for
            return
        _, _, fut = self.pending.popleft()
        if fut is not None and not fut.done():
            if isinstance(reply, RespError):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        error = ConnectionError(f"pub/sub connection lost: {exc or 'closed by the server'}")
        while self.pending:
            _, _, fut = self.pending.popleft()
            if fut is not None and not fut.done():
                fut.set_exception(error)
        self.owner.on_lost(error)


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
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._options.connect_timeout):
            _, protocol = await loop.create_connection(
                lambda: _PubSubProtocol(self), *self.address, ssl=self._options.ssl_context
            )
        assert isinstance(protocol, _PubSubProtocol)
        self._protocol = protocol
        if (auth := self._options.auth_command()) is not None:
            try:
                await self._call(b"auth", b"", auth)
            except BaseException:
                self.close()
                raise

    async def _call(self, kind: bytes, channel: bytes, args: Sequence[Arg]) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.transport is None or protocol.transport.is_closing():
            raise ConnectionError("pub/sub connection lost")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        protocol.pending.append((kind, channel, fut))
        protocol.transport.write(_encode(args))
        async with asyncio.timeout(self._options.timeout):
            return await fut

    async def subscribe(self, channel: bytes, *, sharded: bool) -> None:
        """Subscribe and return once the server confirmed (errors such as MOVED raise)."""
        kind = b"ssubscribe" if sharded else b"subscribe"
        await self._call(kind, channel, [kind.upper(), channel])

    def unsubscribe(self, channel: bytes, *, sharded: bool) -> None:
        """Ask to unsubscribe; the confirmation is not awaited."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None or protocol.transport.is_closing():
            return
        kind = b"sunsubscribe" if sharded else b"unsubscribe"
        protocol.pending.append((kind, channel, None))
        protocol.transport.write(_encode([kind.upper(), channel]))

    def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
