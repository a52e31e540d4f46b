"""ZooKeeper through aiozk: the client from a URL, one-shot requests, errors, paths.

aiozk supplies the wire protocol and the session (connect, heartbeats, reconnects);
this module adds what a lock needs on top and works around what aiozk lacks:

* :class:`Link` sends each request **once**, bounded by a timeout, instead of through
  aiozk's ``Session.send`` (which waits for a connection and retries forever: a create
  sent again after a lost reply makes a second node). It records when the server last
  answered, the base of the session's safe deadline.
* digest credentials are sent on every connection aiozk makes (aiozk has no auth API,
  and ZooKeeper forgets authentication when the connection changes);
* :class:`_Redact` keeps aiozk's DEBUG payload logger from printing those credentials
  (or the session password);
* session loss, which aiozk only logs, is read from its state machine by the backend
  (see :meth:`Link.changed`).

Paths follow Curator's ``InterProcessMutex`` (see :func:`node_prefix`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Protocol, final

import aiozk
import anyio
from aiozk import exc as zk_errors
from aiozk import protocol
from aiozk.states import States

from .._core._clock import Clock
from .._core._errors import (
    BackendUnavailable,
    ConfigurationError,
    ErrorRule,
    LockError,
    translate,
)
from .._core._options import as_seconds, as_text, option
from .._core._url import LockURL

__all__ = (
    "ZK_ERRORS",
    "Link",
    "ZKClientP",
    "ZooKeeperLockOptions",
    "ZooKeeperOptions",
    "client_from_url",
    "encode_name",
    "lock_nodes",
    "node_prefix",
)

logger = logging.getLogger("lockkit.zookeeper")

DEFAULT_PORT: Final = 2181
#: Curator's lock-node marker: ``_c_<uuid>-lock-<10-digit sequence>``.
LOCK_MARK: Final = "lock-"
_NODE = re.compile(r"^(?:_c_([0-9a-f-]{36})-)?.*lock-(\d{10})$")
#: Characters kept as they are in a path segment; every other one is %-encoded.
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:~")


# -- the shape of an aiozk client (aiozk has no type hints) ------------------------------


class StateMachineP(Protocol):
    current_state: str

    def wait_for(self, *states: str) -> asyncio.Future[None]: ...


class ConnectionP(Protocol):
    def send(self, request: Any, xid: int | None = None) -> asyncio.Future[tuple[int, Any]]: ...


class SessionP(Protocol):
    conn: ConnectionP | None
    state: StateMachineP
    session_id: int | None
    timeout: float
    xid: int
    last_zxid: int | None
    started: bool
    closing: bool

    def set_heartbeat(self) -> None: ...
    def add_watch_callback(
        self, event_type: int, path: str, callback: Callable[[str], None]
    ) -> None: ...
    def remove_watch_callback(
        self, event_type: int, path: str, callback: Callable[[str], None]
    ) -> None: ...


class ZKClientP(Protocol):
    """What lockkit uses of an ``aiozk.ZKClient``."""

    session: SessionP
    chroot: str | None
    default_acl: list[Any]

    async def start(self) -> None: ...
    async def close(self) -> None: ...


# -- options -------------------------------------------------------------------------------


def as_root(value: object) -> str:
    text = as_text(value).rstrip("/")
    if not text.startswith("/") and text:
        raise ValueError(f"the root is an absolute path like '/locks', got {value!r}")
    segments = text.split("/")[1:]
    if any(s in ("", ".", "..") for s in segments):
        raise ValueError(f"the root {value!r} has an empty, '.' or '..' segment")
    return text or "/"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ZooKeeperLockOptions:
    """Options of the lock algorithm; valid for URLs and for ``from_client``."""

    #: Parent of every lock's node directory; a lock named N lives at ``{root}/{N}``.
    root: str = option("/lockkit", as_root)
    #: Seconds one request may wait for its reply.
    timeout: float = option(5.0, as_seconds)


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class ZooKeeperOptions(ZooKeeperLockOptions):
    """Options of a backend built from a URL: the lock options plus the session's."""

    #: Session timeout asked of the server (it may grant another within its bounds).
    session_timeout: float = option(10.0, as_seconds)
    #: Seconds entering the client may take to reach a server and open a session.
    connect_timeout: float = option(10.0, as_seconds)


def client_from_url(url: LockURL, options: ZooKeeperOptions) -> aiozk.ZKClient:
    """An unstarted aiozk client for ``url``'s hosts and chroot."""
    if not url.hosts:
        raise ConfigurationError(f"a {url.scheme}:// URL needs at least one host")
    chroot = url.path.rstrip("/")
    if chroot and any(s in ("", ".", "..") for s in chroot.split("/")[1:]):
        raise ConfigurationError(f"the chroot {url.path!r} has an empty, '.' or '..' segment")
    return aiozk.ZKClient(
        ",".join(url.host_strings(DEFAULT_PORT)),
        chroot=chroot or None,
        session_timeout=options.session_timeout,
    )


# -- errors ---------------------------------------------------------------------------------


def _refused(exc: BaseException, what: str) -> LockError:
    return ConfigurationError(
        f"ZooKeeper refused access while trying to {what} ({type(exc).__name__}); check "
        "the credentials and the ACLs of the lock nodes"
    )


def _unavailable(exc: BaseException, what: str) -> LockError:
    detail = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
    return BackendUnavailable(f"ZooKeeper is unavailable; could not {what} ({detail})")


def _answered(exc: BaseException, what: str) -> LockError:
    return BackendUnavailable(
        f"ZooKeeper answered an error while trying to {what}: {type(exc).__name__}"
    )


#: First matching row wins.
ZK_ERRORS: Sequence[ErrorRule] = (
    ((zk_errors.NoAuth, zk_errors.AuthFailed, zk_errors.InvalidACL), _refused),
    (
        (
            zk_errors.ConnectError,
            zk_errors.SessionLost,
            zk_errors.ConnectionLoss,
            zk_errors.SessionExpired,
            zk_errors.SessionMoved,
            zk_errors.OperationTimeout,
            zk_errors.TimeoutError,
            zk_errors.UnfinishedRead,
            OSError,
            TimeoutError,
        ),
        _unavailable,
    ),
    (zk_errors.ZKError, _answered),
)


def driver_error(exc: BaseException, what: str) -> LockError:
    return translate(ZK_ERRORS, exc, what) or _unavailable(exc, what)


# -- paths and node names -----------------------------------------------------------------


def encode_name(name: str, *, at_top: bool = False) -> str:
    """One path segment for lock ``name``: characters outside ``[A-Za-z0-9-_.:~]`` are
    %-encoded (UTF-8), so ``/`` cannot split it and no two names meet; ``.`` and ``..``
    are encoded whole. ``at_top``: the segment sits at the root of the tree, where
    ``zookeeper`` is the server's own."""
    out = "".join(
        c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
        for c in name
    )
    if out in (".", "..") or (at_top and out == "zookeeper"):
        out = f"%{ord(out[0]):02X}{out[1:]}"
    return out


def node_prefix(owner: str) -> str:
    """The name prefix of ``owner``'s node (Curator's protected mode): ``_c_<uuid>-lock-``.
    A lockkit owner id (32 hex digits) is the uuid itself; any other is hashed into one."""
    try:
        ident = uuid.UUID(hex=owner) if len(owner) == 32 else uuid.uuid5(uuid.NAMESPACE_URL, owner)
    except ValueError:
        ident = uuid.uuid5(uuid.NAMESPACE_URL, owner)
    return f"_c_{ident}-{LOCK_MARK}"


def lock_nodes(children: Iterable[str]) -> list[tuple[int, str]]:
    """``(sequence, name)`` of the lock nodes among ``children``, in queue order."""
    nodes = [
        (int(child[-10:]), child)
        for child in children
        if child[-15:-10] == LOCK_MARK and child[-10:].isdigit()
    ]
    nodes.sort()
    return nodes


def owner_of(node: str) -> str:
    """The owner id a node name carries (its uuid as 32 hex digits), else the name."""
    match = _NODE.match(node)
    if match is None or match.group(1) is None:
        return node
    return match.group(1).replace("-", "")


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


# -- container create (opcode 19), which aiozk does not offer ----------------------------------


class CreateContainerRequest(protocol.Create2Request):  # type: ignore[misc]
    opcode = 19


class CreateContainerResponse(protocol.Create2Response):  # type: ignore[misc]
    opcode = 19


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
        except _ANSWERS as exc:
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
                except _ANSWERS as exc:
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
#: Replies that answer the question (returned by Link.call, not raised).
_ANSWERS: Final = (zk_errors.NoNode, zk_errors.NodeExists, zk_errors.NotEmpty)


def _auth_answered(future: asyncio.Future[Any]) -> None:
    if future.cancelled():
        return
    error = future.exception()
    if error is not None:
        logger.warning("ZooKeeper did not accept the credentials: %s", type(error).__name__)


# -- requests the backend builds ---------------------------------------------------------------


def create_node(path: str, acl: list[Any], data: bytes) -> Any:
    request = protocol.Create2Request(path=path, data=data, acl=acl)
    request.set_flags(ephemeral=True, sequential=True)
    return request


def create_container(path: str, acl: list[Any]) -> Any:
    return CreateContainerRequest(path=path, data=b"", acl=acl, flags=4)


def multi(*requests: Any) -> Any:
    request = protocol.TransactionRequest()
    for r in requests:
        request.add(r)
    return request


def children(path: str) -> Any:
    return protocol.GetChildrenRequest(path=path, watch=False)


def delete(path: str) -> Any:
    return protocol.DeleteRequest(path=path, version=-1)


def exists(path: str) -> Any:
    return protocol.ExistsRequest(path=path, watch=False)


def get_data(path: str, *, watch: bool = False) -> Any:
    """getData, not exists, for a watch: a missing node leaves no creation watch behind."""
    return protocol.GetDataRequest(path=path, watch=watch)


def check(path: str) -> Any:
    return protocol.CheckVersionRequest(path=path, version=-1)


NoNode = zk_errors.NoNode
NodeExists = zk_errors.NodeExists
ResponseError = zk_errors.ResponseError
