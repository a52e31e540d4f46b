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
import hashlib
import ssl
from collections.abc import Sequence
from typing import Any, final

import hiredis

__all__ = ("RespConnection", "RespError", "Script")


class RespError(Exception):
    """An error reply from the server (``-ERR ...``)."""


@final
class Script:
    """A Lua script known by its SHA1."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest().encode()


def _encode(args: Sequence[bytes | str | int | float]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = repr(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self, on_lost: Any) -> None:
        self.reader = hiredis.Reader(replyError=RespError)
        self.pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.pending
        while (reply := self.reader.gets()) is not False:
            fut = pending.popleft()
            if not fut.done():
                if isinstance(reply, RespError):
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        error = ConnectionError(f"connection to Redis lost: {exc or 'closed by the server'}")
        while self.pending:
            fut = self.pending.popleft()
            if not fut.done():
                fut.set_exception(error)
        self._on_lost(self)


@final
class RespConnection:
    """One lazily (re)connected socket to one Redis server.

    ``address`` is a callable returning ``(host, port)``, asked at every (re)connect, so
    a Sentinel-resolved primary is looked up again after a failover.
    """

    def __init__(
        self,
        address: Any,
        *,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self._address = address
        self._username = username
        self._password = password
        self._db = db
        self._ssl = ssl_context
        self._connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None
        self._closed = False

    async def _connect(self) -> _Protocol:
        host, port = await self._address()
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            _, protocol = await loop.create_connection(
                lambda: _Protocol(self._lost), host, port, ssl=self._ssl
            )
        assert isinstance(protocol, _Protocol)
        hello: list[list[bytes | str | int]] = []
        if self._password is not None:
            auth: list[bytes | str | int] = ["AUTH"]
            if self._username:
                auth.append(self._username)
            auth.append(self._password)
            hello.append(auth)
        if self._db:
            hello.append(["SELECT", self._db])
        try:
            for command in hello:
                await self._send(protocol, command)
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
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None
        self._protocol = protocol
        return protocol

    @staticmethod
    def _send(
        protocol: _Protocol, args: Sequence[bytes | str | int | float]
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        assert protocol.transport is not None
        protocol.transport.write(_encode(args))
        protocol.pending.append(fut)
        return fut

    async def execute(self, *args: bytes | str | int | float) -> Any:
        """Send one command and return its reply (error replies raise RespError)."""
        protocol = await self._get()
        return await self._send(protocol, args)

    async def evalsha(
        self, script: Script, keys: Sequence[str | bytes], args: Sequence[bytes | str | int | float]
    ) -> Any:
        """Run ``script``, loading it first if the server does not know it."""
        protocol = await self._get()
        command = (b"EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await self._send(protocol, command)
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self.execute(b"SCRIPT", b"LOAD", script.source)
        return await self.execute(*command)

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
