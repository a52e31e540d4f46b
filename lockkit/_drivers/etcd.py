"""etcd through etcetra's generated gRPC stubs: the channel from a URL, calls with a
deadline, errors, key encoding, the lease keep-alive stream and a shared watch stream.

etcetra 0.1.19 supplies the gRPC stubs and the ``EtcdCommunicator`` connection shape;
this module works around what its helpers get wrong for a lock:

* reads are sent **linearizable** (``serializable=False``): etcetra's ``get`` asks for a
  serializable read, which a lagging member answers from stale state;
* prefix ranges end at :func:`prefix_end` (the prefix with its last byte raised by
  one); etcetra's ``get_prefix`` makes ``locks/a/`` end at ``locks/b/``, a range that
  also holds ``locks/ab/``;
* TLS trusts the CA given in the options, with a client certificate and key for
  mutual TLS; etcetra's secure channel trusts the system roots only;
* several members are one gRPC channel over all their addresses (etcetra takes one);
* the lease is kept alive by :class:`KeepAlive`, for as long as the client is open
  (etcetra's lock helper stops its keep-alive as soon as the lock is granted, and
  sends lease 0 when no ttl is given, after which the server's lock RPC grants a 60 s
  lease it never revokes); lockkit uses neither helper.

Keys follow Go's ``concurrency.Mutex`` (see :func:`lock_prefix`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import itertools
import logging
import socket
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, TypeVar, final

import anyio
import grpc
import grpc.aio
from etcetra.client import EtcdCommunicator
from etcetra.errors import EtcetraError
from etcetra.grpc_api import rpc_pb2, rpc_pb2_grpc

from .._core._clock import Clock
from .._core._errors import (
    BackendUnavailable,
    ConfigurationError,
    ErrorRule,
    LockError,
    translate,
)
from .._core._options import TlsOptions, as_count, as_seconds, as_text, option
from .._core._url import LockURL

__all__ = (
    "ETCD_ERRORS",
    "EtcdClientP",
    "EtcdLockOptions",
    "EtcdOptions",
    "KeepAlive",
    "Link",
    "Watcher",
    "encode_name",
    "lock_prefix",
    "prefix_end",
)

logger = logging.getLogger("lockkit.etcd")

T = TypeVar("T")

DEFAULT_PORT: Final = 2379
#: Characters kept as they are in a key segment; every other one is %-encoded.
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:~")
#: etcd refuses transactions with more operations than this (``--max-txn-ops``).
MAX_TXN_OPS: Final = 128

Request = rpc_pb2.RequestOp
SORT_CREATE: Final = rpc_pb2.RangeRequest.CREATE
ASCEND: Final = rpc_pb2.RangeRequest.ASCEND
DESCEND: Final = rpc_pb2.RangeRequest.DESCEND


# -- the shape of an etcetra connection -------------------------------------------------


class EtcdClientP(Protocol):
    """What lockkit uses of an etcetra ``EtcdCommunicator`` (the object
    ``EtcdClient.connect()`` yields): its gRPC channel, authentication included."""

    @property
    def channel(self) -> grpc.aio.Channel: ...


# -- options -------------------------------------------------------------------------------


def as_root(value: object) -> str:
    """A key prefix for every lock; no trailing ``/`` (it is added)."""
    return as_text(value).rstrip("/")


def as_lease_ttl(value: object) -> int:
    result = as_count(value)
    if result < 2:
        raise ValueError(f"etcd grants leases of 2 seconds or more, got {value!r}")
    return result


@dataclasses.dataclass(frozen=True, kw_only=True)
class EtcdLockOptions:
    """Options of the lock algorithm; valid for URLs and for ``from_client``."""

    #: Key prefix of every lock: lock ``N`` keeps its keys under ``{root}/{N}/``.
    root: str = option("lockkit", as_root)
    #: Seconds one request may wait for its reply.
    timeout: float = option(5.0, as_seconds)
    #: Seconds of the client's lease: how long the locks of a crashed process stay
    #: taken. Kept alive every third of it.
    lease_ttl: int = option(10, as_lease_ttl)


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class EtcdOptions(EtcdLockOptions):
    """Options of a backend built from a URL: the lock options, connection and TLS."""

    #: Seconds opening the client may take to reach a member and get its lease.
    connect_timeout: float = option(10.0, as_seconds)
    tls: TlsOptions = dataclasses.field(default_factory=TlsOptions)


# -- errors -----------------------------------------------------------------------------------

_REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
_DOWN = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNKNOWN,
)


def _code(exc: BaseException) -> grpc.StatusCode | None:
    return exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None


def _from_grpc(exc: BaseException, what: str) -> LockError:
    code = _code(exc)
    assert isinstance(exc, grpc.aio.AioRpcError)
    detail = exc.details() or ""
    if code in _REFUSED:
        return ConfigurationError(
            f"etcd refused access while trying to {what} ({code.name if code else '?'}: "
            f"{detail}); check the user, its password and its role's key permissions"
        )
    if code is grpc.StatusCode.INVALID_ARGUMENT and "user name is empty" in detail:
        return ConfigurationError(
            f"etcd requires authentication and could not {what} ({detail}); "
            "give the user and password in the URL: etcd://user:password@host"
        )
    if code in _DOWN:
        return BackendUnavailable(
            f"etcd is unavailable; could not {what} ({code.name if code else '?'}: {detail})"
        )
    return BackendUnavailable(
        f"etcd answered an error while trying to {what}: {code.name if code else '?'}: {detail}"
    )


#: What gRPC says when the TLS handshake fails: the server's certificate is not trusted
#: (or not for this host), or the server refused ours (none, or from another CA).
_TLS_REFUSED = ("ssl handshake failed", "unwrap failed", "peer certificate", "certificate_verify")


def tls_refusal(exc: BaseException | None, scheme: str) -> LockError | None:
    """The error to raise when opening a client failed because of TLS, else None.

    A failed handshake is a :class:`ConfigurationError`: the member answered, and
    trying again will not change the CA, the certificate or the key. A plain
    ``etcd://`` client whose connection a member closes at once is most likely talking
    to a TLS port; that stays :class:`BackendUnavailable` (a member going away looks the
    same), with the hint in the message.
    """
    if not isinstance(exc, grpc.aio.AioRpcError) or exc.code() is not grpc.StatusCode.UNAVAILABLE:
        return None
    detail = exc.details() or ""
    if scheme == "etcds" and any(marker in detail.lower() for marker in _TLS_REFUSED):
        return ConfigurationError(
            f"the TLS handshake with etcd failed ({detail}); check ssl_ca_certs (the CA "
            "that signed the server's certificate, which must name the host in the URL) "
            "and ssl_certfile/ssl_keyfile (a client certificate the server trusts)"
        )
    if scheme == "etcd" and "socket closed" in detail.lower():
        return BackendUnavailable(
            f"etcd is unavailable; the member closed the connection at once ({detail}); "
            "if it serves TLS, use an etcds:// URL"
        )
    return None


def _unavailable(exc: BaseException, what: str) -> LockError:
    detail = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
    return BackendUnavailable(f"etcd is unavailable; could not {what} ({detail})")


#: First matching row wins.
ETCD_ERRORS: Sequence[ErrorRule] = (
    ((grpc.aio.AioRpcError,), _from_grpc),
    ((EtcetraError, grpc.RpcError, OSError, TimeoutError), _unavailable),
)


def driver_error(exc: BaseException, what: str) -> LockError:
    return translate(ETCD_ERRORS, exc, what) or _unavailable(exc, what)


def is_token_expired(exc: BaseException) -> bool:
    """The server forgot our auth token (a member restarted, or the token was unused
    past ``--auth-token-ttl``): authenticate again."""
    return _code(exc) is grpc.StatusCode.UNAUTHENTICATED and "token" in (
        exc.details() or ""  # type: ignore[attr-defined]
    )


class StaleToken(Exception):
    """A stream was refused with the token it was opened with: reopen it after
    authenticating again."""


# -- keys -----------------------------------------------------------------------------------


def encode_name(name: str) -> str:
    """One key segment for lock ``name``: characters outside ``[A-Za-z0-9-_.:~]`` are
    %-encoded (UTF-8), so ``/`` never appears in it and no two names meet."""
    return "".join(
        c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
        for c in name
    )


def lock_prefix(root: str, name: str) -> bytes:
    """``{root}/{encoded name}/``: the prefix Go's ``concurrency.NewMutex(session,
    "{root}/{name}")`` and ``etcdctl lock {root}/{name}`` put their keys under. Each
    acquisition's key is the prefix followed by the lease id in hex."""
    segment = encode_name(name)
    return (f"{root}/{segment}/" if root else f"{segment}/").encode()


def decode_name(segment: bytes) -> str:
    """The lock name :func:`encode_name` made ``segment`` from."""
    return urllib.parse.unquote(segment.decode(errors="replace"), errors="surrogatepass")


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes ``[prefix, end)`` exactly the keys starting with
    ``prefix``: the prefix with its last byte below 0xff raised by one."""
    data = bytearray(prefix)
    while data:
        if data[-1] < 0xFF:
            data[-1] += 1
            return bytes(data)
        data.pop()
    return b"\0"  # every key


def key_of(prefix: bytes, lease: int, slot: int) -> bytes:
    """The key of one acquisition: ``{prefix}{lease hex}`` as Go lays it out for the
    first acquisition of a name by this client, ``{prefix}{lease hex}.{slot}`` for
    others made at the same time by other tasks of the client."""
    return prefix + (f"{lease:x}" if slot == 0 else f"{lease:x}.{slot}").encode()


# -- requests ----------------------------------------------------------------------------------


def op_range(
    key: bytes,
    end: bytes = b"",
    *,
    limit: int = 0,
    order: int = 0,
    max_create: int = 0,
    count_only: bool = False,
    keys_only: bool = False,
) -> Any:
    """A linearizable range read as a transaction operation."""
    return Request(
        request_range=rpc_pb2.RangeRequest(
            key=key,
            range_end=end,
            limit=limit,
            sort_order=order,
            sort_target=SORT_CREATE,
            max_create_revision=max_create,
            count_only=count_only,
            keys_only=keys_only,
            serializable=False,
        )
    )


def op_put(key: bytes, value: bytes, lease: int) -> Any:
    return Request(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease))


def op_delete(key: bytes) -> Any:
    return Request(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key))


def created_at(key: bytes, revision: int, *, end: bytes = b"") -> Any:
    """Compare: ``key``'s create revision is ``revision`` (0: it does not exist; with
    ``end``: no key of the range exists)."""
    return rpc_pb2.Compare(
        result=rpc_pb2.Compare.EQUAL,
        target=rpc_pb2.Compare.CREATE,
        key=key,
        range_end=end,
        create_revision=revision,
    )


def txn(compare: Sequence[Any], success: Sequence[Any], failure: Sequence[Any] = ()) -> Any:
    return rpc_pb2.TxnRequest(compare=compare, success=success, failure=failure)


# -- the channel --------------------------------------------------------------------------------

_CHANNEL_OPTIONS: Final = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 2000),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),
)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _resolve(url: LockURL) -> str:
    """A gRPC target over every member: ``ipv4:a:p,b:p`` (names resolved here)."""
    if not url.hosts:
        raise ConfigurationError(f"a {url.scheme}:// URL needs at least one host")
    v4: list[str] = []
    v6: list[str] = []
    for host, port in url.hosts:
        port = port or DEFAULT_PORT
        if _is_ip(host):
            addresses = [host]
        else:
            try:
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise BackendUnavailable(f"cannot resolve etcd host {host!r}: {exc}") from None
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            if ":" in address:
                v6.append(f"[{address}]:{port}")
            else:
                v4.append(f"{address}:{port}")
    return f"ipv4:{','.join(v4)}" if v4 else f"ipv6:{','.join(v6)}"


async def open_channel(url: LockURL, tls: TlsOptions | None) -> grpc.aio.Channel:
    """A gRPC channel to every member of ``url``; TLS with ``tls`` (etcds://)."""
    target = await _resolve(url)
    options: list[tuple[str, Any]] = list(_CHANNEL_OPTIONS)
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    names = [host for host, _ in url.hosts if not _is_ip(host)]
    # The certificate is checked against the first name in the URL (not the address it
    # resolves to), or the first IP address when there is no name: left alone, gRPC
    # would check it against the whole "ipv4:a:p,b:p" target and always refuse it.
    options.append(("grpc.ssl_target_name_override", names[0] if names else url.hosts[0][0]))
    return grpc.aio.secure_channel(target, tls_credentials(tls), options=options)


def tls_credentials(tls: TlsOptions) -> grpc.ChannelCredentials:
    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise ConfigurationError(f"cannot load the TLS files: {exc}") from None

    if tls.ssl_cert_reqs != "required":
        raise ConfigurationError(
            "the etcd backend always checks the server's certificate "
            "(ssl_cert_reqs=required); give ssl_ca_certs to trust a private CA"
        )
    if (tls.ssl_certfile is None) != (tls.ssl_keyfile is None):
        raise ConfigurationError("mutual TLS needs both ssl_certfile and ssl_keyfile")
    return grpc.ssl_channel_credentials(
        root_certificates=read(tls.ssl_ca_certs),
        private_key=read(tls.ssl_keyfile),
        certificate_chain=read(tls.ssl_certfile),
    )


# -- cancellation ----------------------------------------------------------------------------


async def guarded(call: Awaitable[T]) -> T:
    """Await a gRPC call so that cancelling the caller is an ordinary cancellation.

    grpc.aio answers a cancelled await with a CancelledError of its own, which anyio's
    cancel scopes (``move_on_after``, a shielded cleanup's bound) do not recognise as
    theirs and let escape. Awaited through a task, the caller gets asyncio's own
    cancellation, and the call is cancelled after it.
    """
    task = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        raise


# -- the link -----------------------------------------------------------------------------------


@final
class Link:
    """lockkit's side of one etcd connection: unary calls with a deadline and error
    translation, the auth token (sent as call metadata, renewed when a member forgot
    it), and the stubs the lease and watch streams are opened on.

    Args:
        communicator: the etcetra connection whose channel is used.
        timeout: seconds per call.
        credentials: ``(user, password)`` to authenticate with, or None.
    """

    def __init__(
        self,
        communicator: EtcdClientP,
        *,
        timeout: float,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        channel = communicator.channel
        self.timeout = timeout
        # the generated stubs carry no type hints
        self.kv: Any = rpc_pb2_grpc.KVStub(channel)  # type: ignore[no-untyped-call]
        self.lease: Any = rpc_pb2_grpc.LeaseStub(channel)  # type: ignore[no-untyped-call]
        self.watch: Any = rpc_pb2_grpc.WatchStub(channel)  # type: ignore[no-untyped-call]
        self._auth: Any = rpc_pb2_grpc.AuthStub(channel)  # type: ignore[no-untyped-call]
        self._credentials = credentials
        self._renewing = anyio.Lock()
        self.metadata: tuple[tuple[str, str], ...] | None = None

    def __repr__(self) -> str:
        return f"<Link auth={'yes' if self._credentials else 'no'}>"

    async def authenticate(self) -> None:
        if self._credentials is None:
            return
        user, password = self._credentials
        try:
            reply = await guarded(
                self._auth.Authenticate(
                    rpc_pb2.AuthenticateRequest(name=user, password=password),
                    timeout=self.timeout,
                )
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.INVALID_ARGUMENT or exc.code() in _REFUSED:
                raise ConfigurationError(
                    f"etcd refused the credentials of user {user!r} ({exc.code().name}); "
                    "check the user name and password"
                ) from None
            raise driver_error(exc, "authenticate") from exc
        self.metadata = (("token", reply.token),)

    async def reauthenticate(self, stale: tuple[tuple[str, str], ...] | None) -> None:
        """Authenticate again unless another call already replaced the ``stale`` token."""
        if self._credentials is None:
            return
        async with self._renewing:
            if self.metadata == stale:
                logger.info("etcd forgot the auth token: authenticating again")
                await self.authenticate()

    async def reauthenticate_quietly(self, stale: tuple[tuple[str, str], ...] | None) -> None:
        """:meth:`reauthenticate` for a stream's retry loop: a failure is logged (the
        stream's next attempt, or the next call, tries again)."""
        try:
            await self.reauthenticate(stale)
        except LockError as exc:
            logger.info("could not authenticate with etcd again yet: %s", exc)

    async def call(self, method: Callable[..., Awaitable[Any]], request: Any, what: str) -> Any:
        """``method(request)`` with the deadline and the token; errors translated."""
        for attempt in (0, 1):
            metadata = self.metadata
            try:
                return await guarded(method(request, timeout=self.timeout, metadata=metadata))
            except grpc.aio.AioRpcError as exc:
                if attempt == 0 and self._credentials is not None and is_token_expired(exc):
                    await self.reauthenticate(metadata)
                    continue
                raise driver_error(exc, what) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def txn(self, request: Any, what: str) -> Any:
        return await self.call(self.kv.Txn, request, what)


#: What ends a stream: the server or the connection failed, or the call was finished.
_STREAM_ERRORS = (
    grpc.aio.AioRpcError,
    EtcetraError,
    OSError,
    TimeoutError,
    asyncio.InvalidStateError,
    StaleToken,
)


async def _status(call: Any, exc: BaseException) -> BaseException:
    """Why a stream ended: a write to a finished call raises InvalidStateError, the
    call's own status (e.g. UNAUTHENTICATED: invalid auth token) says why."""
    if not isinstance(exc, asyncio.InvalidStateError):
        return exc
    try:
        with anyio.fail_after(1):
            code = await call.code()
            details = await call.details()
    except (TimeoutError, asyncio.InvalidStateError, grpc.RpcError):
        return exc
    if code is grpc.StatusCode.OK:
        return exc
    empty = grpc.aio.Metadata()
    ended: BaseException = grpc.aio.AioRpcError(code, empty, empty, details)
    return ended


# -- the lease keep-alive stream ------------------------------------------------------------------


@final
class KeepAlive:
    """Keeps one lease alive over a ``LeaseKeepAlive`` stream, every third of its ttl.

    :attr:`deadline` is when the lease may end for all this client knows: the send time
    of the last confirmed keep-alive + the ttl the server answered - ``margin``.
    ``on_change`` is called after each answer, failure and loss.
    """

    def __init__(
        self, link: Link, clock: Clock, lease: int, ttl: int, started: float, *, margin: float
    ) -> None:
        self.link = link
        self.clock = clock
        self.lease = lease
        self.ttl = ttl
        self.margin = margin
        self.deadline = started + ttl - margin
        #: the server said the lease does not exist (expired or revoked)
        self.gone = False
        #: the stream is failing; the lease is at risk until it answers again
        self.failing = False
        self.on_change: Callable[[], None] = lambda: None

    async def run(self) -> None:
        """Until the lease is gone or the task is cancelled."""
        delay = 0.1
        while not self.gone:
            metadata = self.link.metadata
            try:
                await self._stream(metadata)
                delay = 0.1
            except _STREAM_ERRORS as exc:
                if not self.failing:
                    logger.warning("etcd lease keep-alive failed: %s", _short(exc))
                self.failing = True
                self.on_change()
                if is_token_expired(exc):
                    await self.link.reauthenticate_quietly(metadata)
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _stream(self, metadata: Any) -> None:
        call = self.link.lease.LeaseKeepAlive(metadata=metadata)
        try:
            try:
                await self._exchange(call)
            except asyncio.InvalidStateError as exc:
                status = await _status(call, exc)
                if status is exc:
                    raise
                raise status from exc
        finally:
            call.cancel()

    async def _exchange(self, call: Any) -> None:
        while True:
            sent = self.clock.now()
            await guarded(call.write(rpc_pb2.LeaseKeepAliveRequest(ID=self.lease)))
            with anyio.fail_after(self.link.timeout):
                reply = await guarded(call.read())
            if reply is grpc.aio.EOF:
                raise OSError("the keep-alive stream ended")
            if reply.TTL <= 0:
                logger.warning("etcd lease %x is gone (expired or revoked)", self.lease)
                self.gone = True
                self.on_change()
                return
            self.ttl = reply.TTL
            self.deadline = sent + reply.TTL - self.margin
            self.failing = False
            self.on_change()
            await self.clock.sleep_until(sent + reply.TTL / 3)


def _short(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


# -- the watch stream ----------------------------------------------------------------------

#: Cancel reasons of a watch created on a stream whose token the server forgot (etcd
#: 3.4 answers "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"
#: with watch id -1).
_REFUSED_WATCH = ("invalid auth token", "permission denied")


@dataclasses.dataclass(slots=True, eq=False)
class _Watch:
    ident: int
    key: bytes
    #: the next revision whose events matter (resume point after a broken stream)
    start: int
    on_delete: Callable[[bytes], None]
    on_reset: Callable[[bytes], None]


@final
class Watcher:
    """Every watch of one client on one ``Watch`` stream, each on one key, deletions
    only. Watch ids are chosen here, so a watch needs no reply before it counts.

    A broken stream is opened again and every watch resumed from the revision after
    the last one it saw; a watch the server cancels (its start was compacted away)
    is reported through ``on_reset`` so its owner reads the current state and
    watches again from a current revision.
    """

    def __init__(self, link: Link) -> None:
        self.link = link
        self._watches: dict[int, _Watch] = {}
        self._ids = itertools.count(1)
        self._call: Any = None
        self._pending: list[Any] = []
        self._flush = anyio.Event()
        self.up = False
        #: watches created since the client opened (for statistics)
        self.created = 0

    def __len__(self) -> int:
        return len(self._watches)

    def add(
        self,
        key: bytes,
        start: int,
        on_delete: Callable[[bytes], None],
        on_reset: Callable[[bytes], None],
    ) -> int | None:
        """Watch ``key`` for deletion from revision ``start``; the watch id, or None
        when the stream is down (the caller looks again soon)."""
        if not self.up or self._call is None:
            return None
        watch = _Watch(next(self._ids), key, start, on_delete, on_reset)
        self._watches[watch.ident] = watch
        self.created += 1
        self._send(self._create(watch))
        return watch.ident

    def remove(self, ident: int) -> None:
        if self._watches.pop(ident, None) is not None and self.up:
            self._send(
                rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=ident))
            )

    def _create(self, watch: _Watch) -> Any:
        return rpc_pb2.WatchRequest(
            create_request=rpc_pb2.WatchCreateRequest(
                key=watch.key,
                start_revision=watch.start,
                filters=[rpc_pb2.WatchCreateRequest.NOPUT],
                watch_id=watch.ident,
            )
        )

    def _send(self, request: Any) -> None:
        if self._call is None:
            return  # the next stream creates what is still registered
        self._pending.append(request)  # the writer task sends them in order
        self._flush.set()

    async def run(self) -> None:
        """Keep the stream open (reopening it after a failure) until cancelled."""
        delay = 0.1
        while True:
            metadata = self.link.metadata
            stale = False
            try:
                await self._serve(metadata)
                delay = 0.1
            except* _STREAM_ERRORS as group:
                first = group.exceptions[0]
                stale = isinstance(first, StaleToken) or is_token_expired(first)
                logger.info("etcd watch stream broke, reopening: %s", _short(first))
            self.up = False
            self._call = None
            if stale:
                await self.link.reauthenticate_quietly(metadata)
            await anyio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _serve(self, metadata: Any) -> None:
        call = self.link.watch.Watch(metadata=metadata)
        self._call = call
        # every watch resumes from the revision after the last one it saw
        self._pending = [self._create(w) for w in self._watches.values()]
        self._flush = anyio.Event()
        self.up = True
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer, call)
                while True:
                    reply = await guarded(call.read())
                    if reply is grpc.aio.EOF:
                        raise OSError("the watch stream ended")
                    self._handle(reply)
        finally:
            self.up = False
            self._call = None
            call.cancel()

    async def _writer(self, call: Any) -> None:
        while True:
            while self._pending:
                batch, self._pending = self._pending, []
                for request in batch:
                    await guarded(call.write(request))
            self._flush = anyio.Event()
            if not self._pending:
                await self._flush.wait()

    def _handle(self, reply: Any) -> None:
        if reply.canceled and any(r in reply.cancel_reason for r in _REFUSED_WATCH):
            # the stream's token is no longer known (etcd checks it when a watch is
            # created, and its refusal may carry no watch id): keep the watches, reopen
            # the stream with a new token
            raise StaleToken(f"etcd refused a watch: {reply.cancel_reason}")
        watch = self._watches.get(reply.watch_id)
        if watch is None:
            return
        if reply.canceled:
            del self._watches[reply.watch_id]
            logger.info(
                "etcd cancelled the watch on %r (compacted at %d): reading it again",
                watch.key,
                reply.compact_revision,
            )
            watch.on_reset(watch.key)
            return
        watch.start = max(watch.start, reply.header.revision + 1)
        for event in reply.events:
            if event.type == 1:  # DELETE
                watch.start = max(watch.start, event.kv.mod_revision + 1)
                watch.on_delete(watch.key)
                return


def credentials_of(url: LockURL) -> tuple[str, str] | None:
    if url.username is None and url.password is None:
        return None
    if not url.username or url.password is None:
        raise ConfigurationError("etcd credentials are 'user:password@' with both parts")
    return url.username, url.password


def communicator(channel: grpc.aio.Channel) -> EtcdClientP:
    """An etcetra connection over lockkit's channel."""
    result: EtcdClientP = EtcdCommunicator(channel)
    return result
