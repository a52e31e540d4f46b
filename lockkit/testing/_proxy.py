"""A TCP proxy that injects network faults, for tests of lockkit and of code built on it.

:class:`FaultProxy` listens on a loopback port and forwards every connection to one
upstream server. Point a client at :attr:`FaultProxy.hostport` instead of the server and
the test can then, per direction (``"up"``: client to server, ``"down"``: server to
client):

* add latency (:meth:`~FaultProxy.set_latency`): every chunk is delivered that much later,
  in order;
* hold bytes (:meth:`~FaultProxy.hold`): they are kept, and delivered when
  :meth:`~FaultProxy.release` (or :meth:`~FaultProxy.restore`) is called, so a request
  reaches the server but its reply arrives late, or not before the client gave up;
* drop bytes (:meth:`~FaultProxy.drop`): they are discarded, a black hole, while the
  connection stays open;
* reset every open connection (:meth:`~FaultProxy.reset`): both sides get a TCP RST;
* cut the network (:meth:`~FaultProxy.cut`) and :meth:`~FaultProxy.restore` it.

While cut, what happens to *new* connections is ``new="refuse"`` (the default: the
proxy stops listening, so a connect fails with ``ECONNREFUSED``) or ``new="hang"``
(the connection is accepted but nothing is forwarded until the restore, like a
partition where SYNs still get through to a half-dead host). What happens to
*existing* connections is ``existing="blackhole"`` (the default: they stay open and
every byte in both directions is discarded, so a client's requests time out, which is
what a real partition does) or ``existing="reset"`` (they are reset at once).
:meth:`~FaultProxy.restore` ends the cut, the drops and the holds (held bytes are
delivered) and sets latency back to zero; connections black-holed by the cut stay
open but whatever was discarded is gone, so a client normally drops them after its
timeout and reconnects.

Nothing here needs root, ``tc netem`` or toxiproxy; it is plain asyncio.

.. code-block:: python

    async with FaultProxy(("127.0.0.1", 6379)) as proxy:
        async with lockkit.connect(f"redis://{proxy.hostport}/0", timeout=0.5) as locks:
            proxy.set_latency(up=0.05)      # 50 ms on every request
            proxy.cut()                     # requests now time out
            ...
            proxy.restore()

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Final, Literal, Self, final

__all__ = ("Direction", "FaultProxy")

#: ``"up"``: client to server; ``"down"``: server to client.
Direction = Literal["up", "down"]

_DIRECTIONS: Final[tuple[Direction, ...]] = ("up", "down")
_CHUNK: Final = 65536


def _directions(direction: Direction | Literal["both"]) -> tuple[Direction, ...]:
    if direction == "both":
        return _DIRECTIONS
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be 'up', 'down' or 'both', got {direction!r}")
    return (direction,)


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close ``writer``'s socket with an RST rather than a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Pipe:
    """One direction of one connection: a reader task and an ordered delivery task."""

    def __init__(
        self,
        proxy: FaultProxy,
        direction: Direction,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.proxy = proxy
        self.direction = direction
        self.reader = reader
        self.writer = writer
        self.queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

    async def pump(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await self.reader.read(_CHUNK)
                if not data:
                    break
                if self.proxy._dropping(self.direction):
                    continue
                due = loop.time() + self.proxy._latency[self.direction]
                self.queue.put_nowait((due, data))
        except (ConnectionError, OSError):
            pass
        finally:
            self.queue.put_nowait(None)

    async def deliver(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                item = await self.queue.get()
                if item is None:
                    break
                due, data = item
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self.proxy._flowing[self.direction].wait()
                if self.proxy._dropping(self.direction):
                    continue
                self.writer.write(data)
                await self.writer.drain()
            if self.writer.can_write_eof():
                self.writer.write_eof()
        except (ConnectionError, OSError):
            pass


class _Connection:
    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.client_reader, self.client_writer = client
        self.server_writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    def reset(self) -> None:
        _rst(self.client_writer)
        if self.server_writer is not None:
            _rst(self.server_writer)


@final
class FaultProxy:
    """A TCP proxy to ``upstream`` on ``host``:``port`` (a free port by default) that
    adds latency, holds, drops, resets and cuts on command (see the module docstring).

    Use it as an async context manager, or call :meth:`start` and :meth:`aclose`.
    Every fault method is synchronous and takes effect for the next byte.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        upstream: tuple[str, int] | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if isinstance(upstream, str):
            up_host, _, up_port = upstream.rpartition(":")
            upstream = (up_host or "127.0.0.1", int(up_port))
        self.upstream: tuple[str, int] = upstream
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._latency: dict[Direction, float] = {"up": 0.0, "down": 0.0}
        self._dropped: dict[Direction, bool] = {"up": False, "down": False}
        self._flowing: dict[Direction, asyncio.Event] = {}
        self._cut = False
        self._cut_new: Literal["refuse", "hang"] = "refuse"
        self._restored = asyncio.Event()
        self._restored.set()
        self._closed = False
        #: connections accepted since the start
        self.accepted = 0

    # -- life cycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Listen; :attr:`port` is known from here on."""
        for direction in _DIRECTIONS:
            if direction not in self._flowing:
                event = asyncio.Event()
                event.set()
                self._flowing[direction] = event
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, reuse_address=True
        )
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        """Stop listening and reset every connection."""
        self._closed = True
        self._restored.set()
        if self._server is not None:
            self._server.close()
            self._server = None
        self.reset()
        tasks = [c.task for c in self._connections if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- where ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The listening port (after :meth:`start`)."""
        if self._port == 0:
            raise RuntimeError("the proxy has not started")
        return self._port

    @property
    def hostport(self) -> str:
        """``host:port`` to give clients instead of the upstream's."""
        return f"{self._host}:{self.port}"

    @property
    def connections(self) -> int:
        """Connections open through the proxy now."""
        return len(self._connections)

    @property
    def is_cut(self) -> bool:
        return self._cut

    # -- faults --------------------------------------------------------------------

    def set_latency(self, *, up: float | None = None, down: float | None = None) -> None:
        """Delay every chunk by ``up`` (client to server) and ``down`` seconds; ``None``
        leaves a direction as it is. Chunks stay in order."""
        for direction, value in (("up", up), ("down", down)):
            if value is not None:
                if value < 0:
                    raise ValueError("latency must be >= 0")
                self._latency[direction] = float(value)  # type: ignore[index]

    def hold(self, direction: Direction | Literal["both"] = "down") -> None:
        """Keep the bytes of ``direction`` (default: replies) until :meth:`release`."""
        for d in _directions(direction):
            self._flowing[d].clear()

    def release(self, direction: Direction | Literal["both"] = "both") -> None:
        """Deliver what :meth:`hold` kept, and let bytes flow again."""
        for d in _directions(direction):
            self._flowing[d].set()

    def drop(self, direction: Direction | Literal["both"] = "both") -> None:
        """Discard every byte of ``direction`` from now on (a black hole); the
        connections stay open. :meth:`restore` ends it."""
        for d in _directions(direction):
            self._dropped[d] = True

    def reset(self) -> None:
        """Reset every open connection: both the client and the server get an RST."""
        for conn in list(self._connections):
            conn.reset()

    def cut(
        self,
        *,
        new: Literal["refuse", "hang"] = "refuse",
        existing: Literal["blackhole", "reset"] = "blackhole",
    ) -> None:
        """Cut the network between clients and the upstream until :meth:`restore`.

        ``new``: connections made while cut are refused (the proxy stops listening) or
        hang (accepted, nothing forwarded until the restore). ``existing``: open
        connections are black-holed (every byte discarded, both ways) or reset.
        """
        if new not in ("refuse", "hang") or existing not in ("blackhole", "reset"):
            raise ValueError(f"bad cut mode: new={new!r}, existing={existing!r}")
        self._cut = True
        self._cut_new = new
        self._restored.clear()
        if new == "refuse" and self._server is not None:
            self._server.close()
            self._server = None
        if existing == "reset":
            self.reset()

    async def restore(self) -> None:
        """End the cut, drops and holds, and set latency to zero. Held bytes are
        delivered; connections black-holed by the cut stay open, their lost bytes gone."""
        self._dropped = {"up": False, "down": False}
        self._latency = {"up": 0.0, "down": 0.0}
        for event in self._flowing.values():
            event.set()
        if self._cut:
            self._cut = False
            if self._server is None and not self._closed:
                await self._listen()
            self._restored.set()

    # -- internals -----------------------------------------------------------------

    def _dropping(self, direction: Direction) -> bool:
        return self._dropped[direction] or self._cut

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection((reader, writer))
        conn.task = asyncio.current_task()
        self._connections.add(conn)
        self.accepted += 1
        try:
            if self._cut:
                await self._restored.wait()
            if self._closed:
                return
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            conn.server_writer = up_writer
            pipes = (
                _Pipe(self, "up", reader, up_writer),
                _Pipe(self, "down", up_reader, writer),
            )
            async with asyncio.TaskGroup() as tg:
                for pipe in pipes:
                    tg.create_task(pipe.pump())
                    tg.create_task(pipe.deliver())
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # aclose() ends the proxy's own connection tasks; nobody awaits them
        finally:
            self._connections.discard(conn)
            conn.reset()
