"""Hearing wake-ups: the scripts publish the owner id of the waiter whose turn it is.

Two listeners feed the core :class:`~lockkit._core._waiting.WaitRoom`:

* :class:`ClientChannel`: classic pub/sub, one channel per client, one subscription
  made by the first waiter that has to wait and kept (reconnected) until the client
  closes. After a reconnect every waiter asks again: messages may have been missed.
* :class:`ShardedChannels` (Cluster): one sharded channel per contended lock and client,
  subscribed on the node serving the lock's slot while this client has waiters on it,
  and followed when the slot moves or the node fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, final

import anyio
import redis.exceptions as redis_errors

from ..._core._waiting import Listening, Seat, WaitRoom
from .resp import PubSubConnection, RespError
from .scripts import LockKeys

if TYPE_CHECKING:
    from .topology import ClusterExecutor, Node

__all__ = ("ClientChannel", "Listen", "PubSubP", "ShardedChannels", "Subscriber", "Wakeups")


class PubSubP(Protocol):
    """What lockkit uses of a redis-py ``PubSub``."""

    async def subscribe(self, *args: Any, **kwargs: Any) -> Any: ...
    async def get_message(
        self, ignore_subscribe_messages: bool = False, timeout: float | None = 0.0
    ) -> Any: ...
    async def aclose(self) -> None: ...


class SubscriberClientP(Protocol):
    """What lockkit uses of a redis-py client for pub/sub (``redis.asyncio.Redis``)."""

    def pubsub(self) -> PubSubP: ...
    async def aclose(self) -> None: ...


#: Makes a client to subscribe through (asked at every (re)connect), and says whether
#: lockkit owns it (closes it afterwards).
Subscriber = Callable[[], Awaitable[tuple[SubscriberClientP, bool]]]

logger = logging.getLogger("lockkit.redis")


def deliver(room: WaitRoom, data: bytes | str) -> None:
    """Route one wake-up message: the waiter's owner id, then, when the lock was
    granted to it outright, a space and its token."""
    text = data.decode() if isinstance(data, bytes) else str(data)
    owner, _, token = text.partition(" ")
    room.wake(owner, int(token) if token else None)


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Listen:
    """What a listener needs from the backend."""

    #: this client's channel (classic pub/sub)
    channel: str
    client_id: str
    #: the keys of a lock name (sharded channels live next to them)
    keys_of: Callable[[str], LockKeys]
    #: starts a background task in the client's task group
    start_soon: Callable[..., object]
    #: the room to route wake-ups to, when several listeners feed one (Redlock's
    #: masters); a new one otherwise
    room: WaitRoom | None = None


class Wakeups(Protocol):
    """A wake-up listener: the room its waiters sit in, and how they listen."""

    room: WaitRoom
    #: Subscriptions made (each SUBSCRIBE or SSUBSCRIBE the server confirmed).
    subscriptions: int

    async def listen(self, seat: Seat) -> Listening:
        """Make sure ``seat`` will hear its wake-up (see :class:`Listening`)."""
        ...

    async def aclose(self) -> None: ...


@final
class ClientChannel:
    """Classic pub/sub on this client's own channel, through a redis-py client."""

    def __init__(self, subscriber: Subscriber, listen: Listen, timeout: float) -> None:
        self.room = WaitRoom() if listen.room is None else listen.room
        self.subscriptions = 0
        self._subscriber = subscriber
        self._channel = listen.channel
        self._start_soon = listen.start_soon
        self._timeout = timeout
        self._started = False
        self._subscribed = anyio.Event()
        self._closing = False
        #: the current subscription; cancelled by :meth:`reconnect`
        self._session = anyio.CancelScope()

    def reconnect(self) -> None:
        """Subscribe again at once, through a new client (the primary changed: the old
        one may still answer, but wake-ups are now published on the new one)."""
        self._session.cancel()

    async def listen(self, seat: Seat) -> Listening:
        if self._subscribed.is_set():
            return Listening.ON
        if not self._started:
            self._started = True
            self._start_soon(self._read, name="lockkit-redis-pubsub")
        with anyio.move_on_after(self._timeout + 5):
            await self._subscribed.wait()
        if self._closing:
            return Listening.DOWN
        return Listening.NEW if self._subscribed.is_set() else Listening.DOWN

    async def _read(self) -> None:
        """Keep one subscription to this client's channel; route wake-ups to waiters."""
        delay = 0.05
        while True:
            with anyio.CancelScope() as self._session:
                try:
                    await self._subscribe_and_read()
                except (redis_errors.RedisError, OSError) as exc:
                    if self._subscribed.is_set():
                        logger.warning("Redis pub/sub connection lost, reconnecting: %s", exc)
                        delay = 0.05
                    self._subscribed = anyio.Event()
                    await anyio.sleep(delay * random.uniform(1, 2))
                    delay = min(delay * 2, 2.0)
                    continue
            # reconnect(): waiters re-check once the new subscription is confirmed
            self._subscribed = anyio.Event()
            delay = 0.05

    async def _subscribe_and_read(self) -> None:
        client, owned = await self._subscriber()
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                kind = message["type"]
                if kind == "message":
                    deliver(self.room, message["data"])
                elif kind == "subscribe":
                    self.subscriptions += 1
                    self._subscribed.set()
                    self.room.wake_all()  # messages may have been missed while away
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                if owned:
                    with contextlib.suppress(Exception):
                        await client.aclose()

    async def aclose(self) -> None:
        """The reader runs in the client's task group and closes its own connection when
        that is cancelled; here only a waiter still waiting for the subscription is let
        go (the room is closed: it leaves)."""
        self._closing = True
        self._subscribed.set()


@dataclasses.dataclass(eq=False, slots=True)
class _Channel:
    """The sharded channel of one lock, while this client has waiters on it."""

    name: str
    keys: LockKeys
    channel: bytes
    node: Node | None = None
    #: the server confirmed the subscription and has not dropped it since
    on: bool = False


@final
class ShardedChannels:
    """One sharded channel per contended lock, on the node serving its slot."""

    def __init__(self, executor: ClusterExecutor, listen: Listen) -> None:
        self.room = WaitRoom(on_first=self._first, on_last=self._last)
        self.subscriptions = 0
        self._executor = executor
        self._client_id = listen.client_id
        self._keys_of = listen.keys_of
        self._by_name: dict[str, _Channel] = {}
        self._by_channel: dict[bytes, _Channel] = {}
        self._conns: dict[Node, PubSubConnection] = {}
        self._connecting = anyio.Lock()

    def _first(self, name: str) -> None:
        keys = self._keys_of(name)
        self._by_name[name] = _Channel(name, keys, keys.channel(self._client_id))

    def _last(self, name: str) -> None:
        state = self._by_name.pop(name, None)
        if state is None or not state.on:
            return
        state.on = False
        self._by_channel.pop(state.channel, None)
        conn = self._conns.get(state.node) if state.node else None
        if conn is not None:
            conn.unsubscribe(state.channel, sharded=True)

    async def listen(self, seat: Seat) -> Listening:
        state = self._by_name.get(seat.name)
        if state is None:  # pragma: no cover - a seated waiter always has one
            return Listening.DOWN
        if state.on:
            return Listening.ON
        return Listening.NEW if await self._subscribe(state) else Listening.DOWN

    async def _subscribe(self, state: _Channel) -> bool:
        """Subscribe ``state``'s channel where its slot is served. True once confirmed;
        False (logged) if the node cannot be reached: waiters then re-check on a short
        timer and try again."""
        executor = self._executor
        try:
            for attempt in range(2):
                addr = await executor.address_for(state.keys.owner)
                conn = await self._conn(addr)
                try:
                    await conn.subscribe(state.channel, sharded=True)
                except RespError as exc:  # MOVED: the slot map is stale
                    if attempt or not str(exc).startswith(("MOVED", "ASK")):
                        raise
                    await executor.refresh()
                    continue
                self.subscriptions += 1
                if self._by_name.get(state.name) is state:
                    state.on = True
                    state.node = addr
                    self._by_channel[state.channel] = state
                else:  # everyone left meanwhile
                    conn.unsubscribe(state.channel, sharded=True)
                return True
        except (OSError, RespError, TimeoutError) as exc:
            logger.info("cannot listen for wake-ups on %s yet: %s", state.keys.base, exc)
            with contextlib.suppress(Exception):
                await executor.refresh()
        return False

    async def _conn(self, addr: Node) -> PubSubConnection:
        async with self._connecting:
            conn = self._conns.get(addr)
            if conn is None:
                conn = PubSubConnection(
                    *addr,
                    on_message=self._on_message,
                    on_kicked=self._on_kicked,
                    on_lost=lambda exc: self._on_lost(addr, exc),
                    options=self._executor.options,
                )
                await conn.connect()
                self._conns[addr] = conn
            return conn

    def _on_message(self, channel: bytes, data: bytes) -> None:
        deliver(self.room, data)

    def _on_kicked(self, channel: bytes) -> None:
        state = self._by_channel.pop(channel, None)
        if state is not None:  # its slot moved: listen again where it went
            state.on = False
            self.room.wake_name(state.name)

    def _on_lost(self, addr: Node, exc: Exception) -> None:
        if self._conns.pop(addr, None) is None:
            return
        logger.warning("sharded pub/sub connection to %s:%d lost: %s", *addr, exc)
        for channel, state in list(self._by_channel.items()):
            if state.node == addr:
                self._on_kicked(channel)  # its waiters re-check and listen again

    async def aclose(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()
