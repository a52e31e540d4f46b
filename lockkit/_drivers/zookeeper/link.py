"""lockkit's side of an aiozk client: :class:`Link`.

aiozk supplies the wire protocol and the session (connect, heartbeats, reconnects);
:class:`Link` adds what a lock needs on top and works around what aiozk lacks:

* it sends each request **once**, bounded by a timeout, instead of through aiozk's
  ``Session.send`` (which waits for a connection and retries forever: a create sent
  again after a lost reply makes a second node). It records when the server last
  answered, the base of the session's safe deadline.
* digest credentials are sent on every connection aiozk makes (aiozk has no auth API,
  and ZooKeeper forgets authentication when the connection changes);
* :class:`_Redact` keeps aiozk's DEBUG payload logger from printing those credentials
  (or the session password);
* session loss, which aiozk only logs, is read from its state machine (see
  :meth:`Link.on_change`) by the session keeper (:mod:`.session`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final, final

import anyio
from aiozk import exc as zk_errors
from aiozk import protocol
from aiozk.states import States

from ..._core._clock import Clock
from ..._core._errors import BackendUnavailable, LockError
from .errors import ANSWERS, driver_error
from .options import ZKClientP

__all__ = ("Link",)

logger = logging.getLogger("lockkit.zookeeper")


# -- logging ----------------------------------------------------------------------------------


class _Redact(logging.Filter):
    """Hides the payload of auth and connect requests and replies in aiozk's payload log
    (they carry digest credentials and the session password)."""

    _SECRET = (protocol.AuthRequest, protocol.ConnectRequest, protocol.ConnectResponse)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, self._SECRET) for a in args):
            record.args = tuple(
                f"<{type(a).__name__} hidden by lockkit>" if isinstance(a, self._SECRET) else a
                for a in args
            )
        return True


_PAYLOAD_LOGGER: Final = "aiozk.connection.payload"


def _install_redaction() -> None:
    payload = logging.getLogger(_PAYLOAD_LOGGER)
    if not any(isinstance(f, _Redact) for f in payload.filters):
        payload.addFilter(_Redact())


_install_redaction()


# -- the link -----------------------------------------------------------------------------------


def _acl_all_for_creator() -> list[Any]:
    return [protocol.AUTHED_UNRESTRICTED]


@final
class Link:
    """lockkit's side of one aiozk client: one-shot requests with a timeout, the
    credentials, and the time of the server's last answer.

    Args:
        client: the aiozk client (started by :meth:`open` if it is not yet).
        clock: the clock of every deadline.
        timeout: seconds per request.
        credentials: ``user:password`` for digest auth, or None.
        owned: lockkit made the client and closes it.
    """

    def __init__(
        self,
        client: ZKClientP,
        clock: Clock,
        *,
        timeout: float,
        credentials: bytes | None = None,
        owned: bool = False,
    ) -> None:
        self.client = client
        self.session = client.session
        self.clock = clock
        self.timeout = timeout
        self._credentials = credentials
        self.owned = owned
        self.chroot = (client.chroot or "").rstrip("/")
        #: ACL of every node lockkit creates
        self.acl: list[Any] = _acl_all_for_creator() if credentials else list(client.default_acl)
        #: clock reading taken before the last request the server answered
        self.last_ok = clock.now()
        if credentials is not None:
            self._authenticate_every_connection()

    def __repr__(self) -> str:
        return f"<Link chroot={self.chroot or '/'!r}{' auth' if self._credentials else ''}>"

    # -- lifecycle ---------------------------------------------------------------

    def _authenticate_every_connection(self) -> None:
        """ZooKeeper ties digest credentials to a connection: send them right after
        each session handshake, before the connection carries anything else (aiozk
        starts reading and marks the session connected only afterwards)."""
        session: Any = self.session
        handshake = session.establish_session
        credentials = self._credentials

        async def handshake_then_authenticate() -> None:
            await handshake()
            sent = session.conn.send(
                protocol.AuthRequest(type=0, scheme="digest", auth=credentials)
            )
            sent.add_done_callback(_auth_answered)

        session.establish_session = handshake_then_authenticate

    async def open(self, connect_timeout: float) -> None:
        """Start the session (unless the application did) within ``connect_timeout``."""
        try:
            with anyio.fail_after(connect_timeout):
                await self.client.start()
        except TimeoutError as exc:
            await self.abandon()
            raise BackendUnavailable(
                f"no ZooKeeper server answered within {connect_timeout:g}s"
            ) from exc
        except Exception as exc:
            await self.abandon()
            raise driver_error(exc, "open a ZooKeeper session") from exc
        self.last_ok = self.clock.now()

    async def close(self) -> None:
        """Close the session if lockkit made it (the server then deletes its nodes)."""
        if not self.owned:
            return
        if self.session.state.current_state != States.CONNECTED:
            await self.abandon()
            return
        try:
            with anyio.fail_after(self.timeout):
                await self.client.close()
        except Exception as exc:  # the session ends on the server at its timeout anyway
            logger.info(
                "could not close the ZooKeeper session cleanly: %s", driver_error(exc, "close")
            )
            await self.abandon()

    async def abandon(self) -> None:
        """Stop aiozk's background work without talking to the server (aiozk's own
        close waits for a connection that may never come)."""
        if not self.owned:
            return
        session: Any = self.session
        session.closing = True
        for name in ("repair_loop_task", "heartbeat_task"):
            task = getattr(session, name, None)
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if session.heartbeat_handle is not None:
            session.heartbeat_handle.cancel()
            session.heartbeat_handle = None
        conn = session.conn
        if conn is not None:
            conn.closing = True
            if conn.read_loop_task is not None and not conn.read_loop_task.done():
                conn.read_loop_task.cancel()
                with contextlib.suppress(BaseException):
                    await conn.read_loop_task
            conn.abort(zk_errors.ConnectError)
            if conn.writer is not None:
                conn.writer.close()
        session.started = False

    # -- requests ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return bool(self.session.state.current_state == States.CONNECTED)

    def path(self, *parts: str) -> str:
        """The server path (chroot included) of ``parts`` joined under the chroot."""
        return self.chroot + "/".join(("", *(p.strip("/") for p in parts if p.strip("/"))))

    def send(self, request: Any) -> asyncio.Future[tuple[int, Any]]:
        """Write ``request`` now (once, never again) and return its reply future."""
        session = self.session
        conn = session.conn
        if conn is None or session.state.current_state != States.CONNECTED:
            raise zk_errors.ConnectError("-", 0)
        session.xid = xid = session.xid + 1 if session.xid < 0x7FFFFFFF else 1
        return conn.send(request, xid=xid)

    async def call(self, request: Any, what: str) -> Any:
        """Send ``request`` once and return its reply; errors are lockkit errors (a
        ``NoNode``, ``NodeExists`` or ``NotEmpty`` reply is returned, not raised)."""
        started = self.clock.now()
        try:
            if not self.connected:
                await self._wait_connected()
            with anyio.fail_after(self.timeout):
                zxid, reply = await self.send(request)
        except ANSWERS as exc:
            self.answered(started, 0)
            return exc
        except Exception as exc:
            raise self.failed(exc, what) from exc
        self.answered(started, zxid)
        return reply

    async def call_many(self, requests: Sequence[Any], what: str) -> list[Any]:
        """Send ``requests`` back to back (the server handles them in order) and return
        their replies, each a reply or the error the server answered."""
        started = self.clock.now()
        try:
            if not self.connected:
                await self._wait_connected()
            futures = [self.send(r) for r in requests]
        except Exception as exc:
            raise self.failed(exc, what) from exc
        replies: list[Any] = []
        failure: BaseException | None = None
        with anyio.move_on_after(self.timeout) as scope:
            for future in futures:
                try:
                    zxid, reply = await future
                except ANSWERS as exc:
                    reply, zxid = exc, 0
                except Exception as exc:
                    failure = failure or exc
                    continue
                replies.append(reply)
                self.answered(started, zxid)
        if scope.cancelled_caught:
            for future in futures:
                future.cancel()
            failure = failure or TimeoutError(f"no reply within {self.timeout:g}s")
        if failure is not None:
            raise self.failed(failure, what) from failure
        return replies

    def answered(self, started: float, zxid: int) -> None:
        self.last_ok = max(self.last_ok, started)
        if zxid > 0:
            self.session.last_zxid = zxid
        self.session.set_heartbeat()

    def failed(self, exc: BaseException, what: str) -> LockError:
        if isinstance(exc, zk_errors.ConnectError) and self.connected:
            self.session.state.transition_to(States.SUSPENDED)  # type: ignore[attr-defined]
        if isinstance(exc, LockError):
            return exc
        return driver_error(exc, what)

    async def _wait_connected(self) -> None:
        with anyio.fail_after(self.timeout):
            await self.session.state.wait_for(States.CONNECTED)

    # -- session state ------------------------------------------------------------------

    def on_change(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when the session leaves its current state or its connection
        stops reading; returns a function that cancels the subscription."""
        machine: Any = self.session.state
        current = machine.current_state
        states = [s for s in _STATES if s != current]
        future = machine.wait_for(*states)
        future.add_done_callback(lambda f: None if f.cancelled() else callback())
        reader = getattr(self.session.conn, "read_loop_task", None)

        def ended(_: object) -> None:
            callback()

        if reader is not None:
            reader.add_done_callback(ended)

        def cancel() -> None:
            future.cancel()
            for state in states:
                machine.futures[state].discard(future)
            if reader is not None:
                reader.remove_done_callback(ended)

        return cancel

    def notice_closed_connection(self) -> None:
        """aiozk's reader stops without a word when the server closes the connection
        (as it does when the session expired or moved): fail what waits on it and mark
        the session suspended, so that aiozk reconnects now rather than after a missed
        heartbeat (two thirds of the session timeout)."""
        session: Any = self.session
        conn = session.conn
        reader = getattr(conn, "read_loop_task", None)
        if reader is None or not reader.done() or session.closing or conn.closing:
            return
        if session.state.current_state == States.CONNECTED:
            logger.info("the ZooKeeper server closed the connection")
            conn.abort(zk_errors.ConnectError)
            session.state.transition_to(States.SUSPENDED)

    def watch(self, path: str, callback: Callable[[str], None]) -> None:
        """Route deletion and data-change events of ``path`` to ``callback``."""
        for event in _WATCHED:
            self.session.add_watch_callback(event, path, callback)

    def unwatch(self, path: str, callback: Callable[[str], None]) -> None:
        for event in _WATCHED:
            with contextlib.suppress(KeyError):
                self.session.remove_watch_callback(event, path, callback)


_STATES: Final = (States.CONNECTED, States.SUSPENDED, States.LOST, States.READ_ONLY)
_WATCHED: Final = (protocol.WatchEvent.DELETED, protocol.WatchEvent.DATA_CHANGED)


def _auth_answered(future: asyncio.Future[Any]) -> None:
    if future.cancelled():
        return
    error = future.exception()
    if error is not None:
        logger.warning("ZooKeeper did not accept the credentials: %s", type(error).__name__)
