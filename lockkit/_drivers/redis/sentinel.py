"""Which node is the primary, as a quorum of Sentinels says, and following its changes.

A node is never trusted only because it answers as master: a primary that was paused
past ``down-after`` and failed over goes on answering as master for seconds after it
resumes. :meth:`SentinelView.primary` asks every Sentinel and accepts an address only
when a majority of the configured Sentinels names it, or, while no other address can
still reach a majority, when a Sentinel announced the switch to it with
``+switch-master`` (a failover needs a majority's authorisation, and the other Sentinels
learn of it a moment later; an old announcement never outvotes a majority). An address
announced as the *old*
primary of a switch is refused for :data:`DEMOTION` seconds (while the other Sentinels
catch up), or until a later switch names it again.

:meth:`SentinelView.follow` listens to ``+switch-master`` on every Sentinel (and asks
again every :data:`POLL` seconds, for a missed message): on a switch away from the node
the executor's connection was made to, that connection is dropped and every lease is
handed to ``reconfirm``: renewed on the new primary at once, lost if not confirmed
there within :data:`RECONFIRM` seconds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import final

from ..._core._backend import Reconfirm
from .errors import is_refused
from .resp import (
    ConnectOptions,
    NotSentError,
    PubSubConnection,
    RespConnection,
    RespError,
    fixed,
)

__all__ = ("DEMOTION", "POLL", "RECONFIRM", "SentinelView")

logger = logging.getLogger("lockkit")

Node = tuple[str, int]

#: Seconds between two fallback asks of the primary's address.
POLL = 1.0
#: Seconds a lease granted by a demoted primary has to be confirmed on the new one.
RECONFIRM = 1.0
#: Seconds the old primary of a switch stays refused whatever the Sentinels say (they
#: learn of a switch from each other within a few seconds); after that a quorum rules
#: again, so a later failback is followed even when its announcement was missed.
DEMOTION = 10.0
_SWITCH = b"+switch-master"


def _set(event: asyncio.Event, _: object) -> None:
    event.set()


@final
class SentinelView:
    """The Sentinels of one service, asked by quorum, and the primary they name."""

    def __init__(
        self, hosts: Sequence[Node], service: str, options: ConnectOptions, *, timeout: float
    ) -> None:
        self.hosts = list(hosts)
        self.service = service
        self.options = options
        self.timeout = timeout
        self._conns = [self._connection(host) for host in self.hosts]
        #: the primary of the last +switch-master heard (None: none heard)
        self.announced: Node | None = None
        #: old primaries of the switches heard, with when: refused for DEMOTION seconds
        #: (or until a switch names them anew)
        self.demoted: dict[Node, float] = {}
        #: where the executor's connection was last made to (set by the executor)
        self.current: Node | None = None

    def _connection(self, host: Node) -> RespConnection:
        return RespConnection(fixed(host), self.options)

    @property
    def majority(self) -> int:
        return len(self.hosts) // 2 + 1

    async def _ask(self, conn: RespConnection) -> Node | None:
        async with asyncio.timeout(self.timeout):
            reply = await conn.execute("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        if not isinstance(reply, list) or len(reply) != 2:
            return None
        return reply[0].decode(), int(reply[1])

    def _refused(self, node: Node) -> bool:
        since = self.demoted.get(node)
        if since is None:
            return False
        if time.monotonic() - since < DEMOTION:
            return True
        del self.demoted[node]
        return False

    async def primary(self) -> Node:
        """The primary a majority of the Sentinels names. Failing a majority (the
        Sentinels are still spreading a switch), the primary of the last
        ``+switch-master`` heard, if one that answered names it too. A refused (demoted)
        node never. :class:`NotSentError` otherwise.

        The announcement only breaks a tie: one heard before a switch this client missed
        (it was cut off when the Sentinels switched back) must not outvote a majority,
        or a lagging Sentinel naming the old node would be believed."""
        votes: collections.Counter[Node] = collections.Counter()
        errors: list[BaseException] = []
        asks = [asyncio.ensure_future(self._ask(conn)) for conn in self._conns]
        pending = len(asks)
        try:
            for ask in asyncio.as_completed(asks):
                pending -= 1
                try:
                    node = await ask
                except (OSError, TimeoutError, RespError) as exc:
                    if is_refused(exc):
                        raise
                    errors.append(exc)
                    node = None
                if node is not None:
                    votes[node] += 1
                    if votes[node] >= self.majority and not self._refused(node):
                        return node
                if self._announced_stands(votes, pending):
                    return self.announced  # type: ignore[return-value]
        finally:
            for ask in asks:
                ask.cancel()
        said = ", ".join(f"{h}:{p} by {n}" for (h, p), n in votes.items()) or "nothing"
        raise NotSentError(
            f"no quorum of the {len(self.hosts)} Sentinels names a primary for "
            f"{self.service!r} ({said}; {len(errors)} did not answer)"
        )

    def _announced_stands(self, votes: collections.Counter[Node], pending: int) -> bool:
        """Whether the announced primary can be taken: a Sentinel that answered names
        it, it is not refused, and no other node can still reach a majority."""
        announced = self.announced
        if announced is None or not votes[announced] or self._refused(announced):
            return False
        rivals = (v for n, v in votes.items() if n != announced and not self._refused(n))
        return max(rivals, default=0) + pending < self.majority

    def switched(self, old: Node | None, new: Node, drop: Callable[[], None]) -> bool:
        """A switch was heard (or polled): refuse ``old`` from now on; if the executor's
        connection was made to another node than ``new``, call ``drop`` and return True
        (its leases must be confirmed on ``new``)."""
        if old is not None and old != new:
            self.demoted.setdefault(old, time.monotonic())
        self.demoted.pop(new, None)
        self.announced = new
        if self.current is None or self.current == new:
            return False
        logger.warning(
            "Sentinels switched the primary of %r from %s:%d to %s:%d; leases are being "
            "confirmed on the new primary",
            self.service,
            *self.current,
            *new,
        )
        drop()
        return True

    async def follow(self, drop: Callable[[], None], reconfirm: Reconfirm) -> None:
        """Follow the Sentinels until cancelled (see the module docstring)."""

        def on_switch(old: Node | None, new: Node) -> None:
            if self.switched(old, new, drop):
                reconfirm(
                    RECONFIRM,
                    f"the Sentinels named a new primary for {self.service!r}, which did not "
                    f"confirm this lease within {RECONFIRM:g}s",
                )

        listeners = [asyncio.ensure_future(self._listen(h, on_switch)) for h in self.hosts]
        try:
            while True:
                await asyncio.sleep(POLL)
                if self.current is None:
                    continue
                try:
                    node = await self.primary()
                except (OSError, TimeoutError, RespError) as exc:
                    logger.debug("could not ask the Sentinels: %s", exc)
                    continue
                if node != self.current:
                    on_switch(self.current, node)
        finally:
            for listener in listeners:
                listener.cancel()
            for listener in listeners:
                with contextlib.suppress(BaseException):
                    await listener

    async def _listen(self, host: Node, on_switch: Callable[[Node | None, Node], None]) -> None:
        """Hear ``+switch-master`` on one Sentinel, reconnecting after a loss."""
        service = self.service.encode()

        def on_message(channel: bytes, data: bytes) -> None:
            parts = data.split()
            if channel != _SWITCH or len(parts) != 5 or parts[0] != service:
                return
            try:
                old = (parts[1].decode(), int(parts[2]))
                new = (parts[3].decode(), int(parts[4]))
            except ValueError:  # pragma: no cover - Sentinel sends numbers
                return
            on_switch(old, new)

        while True:
            lost = asyncio.Event()
            conn = PubSubConnection(
                *host,
                on_message=on_message,
                on_kicked=functools.partial(_set, lost),
                on_lost=functools.partial(_set, lost),
                options=self.options,
            )
            try:
                await conn.connect()
                await conn.subscribe(_SWITCH, sharded=False)
                await lost.wait()
            except (OSError, TimeoutError, RespError) as exc:
                logger.debug("Sentinel %s:%d: %s", *host, exc)
            finally:
                conn.close()
            await asyncio.sleep(POLL)

    async def aclose(self) -> None:
        for conn in self._conns:
            await conn.aclose()
