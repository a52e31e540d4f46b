"""A guard over etcd: ``EtcdGuard``.

URL grammar (the etcd backend's, with the guard's own ``root``)::

    etcd://[user:password@]host[:2379][,host[:2379]...][?option=value...]
    etcds://...?ssl_ca_certs=ca.pem[&ssl_certfile=...&ssl_keyfile=...]

===================  ===============  ==================================================
``root``             lockkit-guards   key prefix of every resource
``timeout``          5                seconds per request
``connect_timeout``  10               seconds to reach a member when first used
TLS (``etcds://``)                    ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``
===================  ===============  ==================================================

Layout: resource ``R`` is two keys under ``{root}/{R}/``: ``fence``, a JSON record
(``{"lockkit-fence":1,"token":..,"owner":..,"lock":..,"backend":..}``), and ``value``,
the codec's bytes as they are (``etcdctl get`` shows them). ``R`` is %-encoded as lock
names are, so ``/`` cannot split it. The version of
:meth:`~EtcdGuard.read_versioned` is etcd's own ``version`` of the value key: 1 when
it is created, one more per put. ``check()`` writes the fence key only.

Atomicity: a write reads both keys (one linearizable range), applies
:func:`~lockkit.abc.check_fence` to what it read, then sends ONE ``Txn`` whose
compares say "the fence key is at the ``mod_revision`` read" (0: still missing; with
``expect_version``, the value key too) and whose success branch puts the new fence
and the value. Every newer token changes the fence key. If anything that matters was
written in between, a compare fails, nothing is applied, and the failure branch
returns both keys as they are now: the guard decides again on that, so a decision is
always taken on current data. Given the lock's key (``lock_key=``), the Txn also
compares its ``create_revision`` with the token (Go's ``Mutex.IsOwner``): a holder
whose lease ended is refused even before a newer holder writes.

The caller's own mutation: :meth:`EtcdGuard.txn` adds the caller's compares and
operations (:func:`put`, :func:`delete`, :func:`get`; :func:`value_is`,
:func:`version_is`, :func:`mod_revision_is`) to the same ``Txn``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from typing import Any, ClassVar, Final, Generic, TypeVar, final

import grpc.aio
from etcetra.grpc_api import rpc_pb2

from .._core._errors import (
    BackendUnavailable,
    ConfigurationError,
    LockError,
    StaleTokenError,
    WriteConflictError,
)
from .._core._names import validate_name
from .._core._options import TlsOptions, as_seconds, option, parse_options
from .._core._token import FencingToken
from .._core._url import LockURL, parse_url
from .._drivers import etcd
from .._drivers.etcd import EtcdClientP, Link, as_root, op_put, op_range, prefix_end, txn
from ..abc import Fence, Guard, GuardCapability, Versioned, check_fence
from ._codec import JSON, Codec

__all__ = (
    "EtcdCompareFailed",
    "EtcdGuard",
    "EtcdGuardOptions",
    "delete",
    "get",
    "mod_revision_is",
    "put",
    "value_is",
    "version_is",
)

ValueT = TypeVar("ValueT")

_MARK: Final = "lockkit-fence"
_TLS_OPTIONS = frozenset({"ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile"})


@dataclasses.dataclass(frozen=True, kw_only=True)
class EtcdGuardOptions:
    """Options of :class:`EtcdGuard` (URL query or keywords; keywords win)."""

    #: Key prefix of every resource: resource ``R`` keeps its keys under ``{root}/{R}/``.
    root: str = option("lockkit-guards", as_root)
    #: Seconds one request may wait for its reply.
    timeout: float = option(5.0, as_seconds)
    #: Seconds the first use may take to reach a member (URLs only).
    connect_timeout: float = option(10.0, as_seconds)
    tls: TlsOptions = dataclasses.field(default_factory=TlsOptions)


_CLIENT_OPTIONS: Final = frozenset({"root", "timeout"})


# -- the caller's operations and compares ------------------------------------------------


def _key(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else bytes(key)


def put(key: str | bytes, value: bytes) -> Any:
    """An operation for :meth:`EtcdGuard.txn`: put ``value`` at ``key`` (no lease)."""
    return op_put(_key(key), value, 0)


def delete(key: str | bytes) -> Any:
    """An operation for :meth:`EtcdGuard.txn`: delete ``key``."""
    return etcd.op_delete(_key(key))


def get(key: str | bytes) -> Any:
    """An operation for :meth:`EtcdGuard.txn`: read ``key`` in the Txn's revision."""
    return op_range(_key(key))


def value_is(key: str | bytes, value: bytes) -> Any:
    """A compare for :meth:`EtcdGuard.txn`: ``key`` holds ``value``."""
    return rpc_pb2.Compare(
        result=rpc_pb2.Compare.EQUAL, target=rpc_pb2.Compare.VALUE, key=_key(key), value=value
    )


def version_is(key: str | bytes, version: int) -> Any:
    """A compare for :meth:`EtcdGuard.txn`: ``key`` is at ``version`` (0: missing)."""
    return rpc_pb2.Compare(
        result=rpc_pb2.Compare.EQUAL,
        target=rpc_pb2.Compare.VERSION,
        key=_key(key),
        version=version,
    )


def mod_revision_is(key: str | bytes, revision: int) -> Any:
    """A compare: ``key`` was last written at ``revision`` (0: missing)."""
    return rpc_pb2.Compare(
        result=rpc_pb2.Compare.EQUAL,
        target=rpc_pb2.Compare.MOD,
        key=_key(key),
        mod_revision=revision,
    )


class EtcdCompareFailed(LockError):
    """One of the caller's compares in :meth:`EtcdGuard.txn` failed, so etcd applied
    nothing (the fence was not raised either)."""


# -- the fence record ---------------------------------------------------------------------


def _record(token: FencingToken) -> bytes:
    fields = {
        _MARK: 1,
        "token": int(token),
        "owner": token.owner,
        "lock": token.name,
        "backend": token.backend,
    }
    return json.dumps(fields, separators=(",", ":")).encode()


def _fence(resource: str, key: bytes, data: bytes) -> Fence:
    try:
        fields = json.loads(data)
        if fields.get(_MARK) != 1:
            raise ValueError
        return Fence(resource, fields["token"], fields["owner"], fields["lock"], fields["backend"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigurationError(
            f"the key {key.decode(errors='replace')!r} holds no lockkit fence record: is the "
            "guard's root shared with something else?"
        ) from None


def _found(reply: Any) -> dict[bytes, Any]:
    """The key-values of a Txn's first response (a range), by key."""
    return {kv.key: kv for kv in reply.responses[0].response_range.kvs}


# -- the guard ------------------------------------------------------------------------------


@final
class EtcdGuard(Guard[ValueT], Generic[ValueT]):
    """Values in etcd, each under a fence key, written with one ``Txn``. See the module
    docstring for the layout and why it is atomic.

    Build it with :meth:`from_url` or :meth:`from_client`; it connects when first used
    (or entered) and closes what it opened in :meth:`aclose`.

    .. versionadded:: 0.1
    """

    kind: ClassVar[str] = "etcd"
    capabilities: ClassVar[frozenset[GuardCapability]] = frozenset(
        {GuardCapability.READ, GuardCapability.CHECK, GuardCapability.VERSIONED}
    )

    def __init__(
        self,
        client: EtcdClientP | None,
        options: EtcdGuardOptions = EtcdGuardOptions(),
        *,
        codec: Codec[ValueT],
        url: LockURL | None = None,
    ) -> None:
        self.options = options
        self.codec = codec
        self._client = client
        self._url = url
        self._channel: grpc.aio.Channel | None = None
        self._link: Link | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    @classmethod
    def from_url(
        cls, url: str | LockURL, *, codec: Codec[Any] = JSON, **options: Any
    ) -> EtcdGuard[Any]:
        """A guard with a channel of its own to ``url``'s members (``etcd://`` or, with
        TLS, ``etcds://``).

        Args:
            url: the members and optional ``user:password@``.
            codec: how values become key values (:data:`~lockkit.guards.JSON` by default).
            **options: see :class:`EtcdGuardOptions`.
        """
        parsed = parse_url(url) if isinstance(url, str) else url
        if parsed.scheme not in ("etcd", "etcds"):
            raise ConfigurationError(f"EtcdGuard takes etcd:// URLs, not {parsed.scheme}://")
        if parsed.scheme == "etcd" and {*parsed.query, *options} & _TLS_OPTIONS:
            raise ConfigurationError("TLS options need an etcds:// URL")
        if parsed.path not in ("", "/"):
            raise ConfigurationError("an etcd URL has no path; put the prefix in 'root'")
        if not parsed.hosts:
            raise ConfigurationError(f"a {parsed.scheme}:// URL needs at least one host")
        opts = parse_options(EtcdGuardOptions, "etcd guard", parsed.query, options)
        etcd.credentials_of(parsed)  # fail fast on half credentials
        if parsed.scheme == "etcds":
            etcd.tls_credentials(opts.tls)  # and on unreadable files
        return cls(None, opts, codec=codec, url=parsed)

    @classmethod
    def from_client(
        cls, client: EtcdClientP, *, codec: Codec[Any] = JSON, **options: Any
    ) -> EtcdGuard[Any]:
        """Use the application's etcetra connection (an ``EtcdCommunicator``, as
        ``EtcdClient.connect()`` yields it, authentication included); the guard never
        closes it.

        Args:
            client: the application's connection.
            codec: how values become key values.
            **options: ``root`` and ``timeout``.
        """
        opts = parse_options(
            EtcdGuardOptions, "etcd guard", {}, options, allowed=set(_CLIENT_OPTIONS)
        )
        return cls(client, opts, codec=codec)

    def __repr__(self) -> str:
        return f"<EtcdGuard root={self.options.root!r} codec={self.codec!r}>"

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> EtcdGuard[ValueT]:
        await self._ready()
        return self

    async def _ready(self) -> Link:
        if self._link is not None:
            return self._link
        if self._closed:
            raise BackendUnavailable("the etcd guard is closed")
        async with self._opening:
            if self._link is None:
                self._link = await self._connect()
        return self._link

    async def _connect(self) -> Link:
        client, credentials, url = self._client, None, self._url
        if client is None:
            assert url is not None
            tls = self.options.tls if url.scheme == "etcds" else None
            self._channel = await etcd.open_channel(url, tls)
            client = etcd.communicator(self._channel)
            credentials = etcd.credentials_of(url)
        link = Link(client, timeout=self.options.timeout, credentials=credentials)
        try:
            await link.authenticate()
        except BackendUnavailable as exc:
            await self._close_channel()
            better = etcd.tls_refusal(exc.__cause__, url.scheme if url else "")
            if better is not None:
                raise better from None
            raise
        except BaseException:
            await self._close_channel()
            raise
        return link

    async def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await asyncio.shield(channel.close())

    async def aclose(self) -> None:
        self._closed = True
        self._link = None
        await self._close_channel()

    # -- keys --------------------------------------------------------------------------------

    def prefix(self, resource: str) -> bytes:
        """The key prefix of ``resource``: its keys are ``fence`` and ``value`` below it."""
        validate_name(resource, "resource")
        return etcd.lock_prefix(self.options.root, resource)

    # -- the guard's operations --------------------------------------------------------------

    async def write(
        self,
        resource: str,
        value: ValueT,
        *,
        token: FencingToken,
        expect_version: int | None = None,
        lock_key: bytes | None = None,
    ) -> None:
        """See :meth:`Guard.write`. With ``lock_key`` (the holder's key in the lock
        backend), the write also needs that key to exist with the token as its create
        revision, as Go's ``IsOwner`` checks."""
        check_fence(resource, None, token)  # a FencingToken, before anything else
        data = self.codec.encode(value)
        await self._apply(
            resource, token, data=data, expect_version=expect_version, lock_key=lock_key
        )

    async def check(
        self, resource: str, *, token: FencingToken, lock_key: bytes | None = None
    ) -> None:
        check_fence(resource, None, token)
        await self._apply(resource, token, lock_key=lock_key)

    async def txn(
        self,
        resource: str,
        ops: Sequence[Any],
        *,
        token: FencingToken,
        compare: Sequence[Any] = (),
        lock_key: bytes | None = None,
    ) -> list[Any]:
        """Apply the caller's operations in the same ``Txn`` as the fence check: if the
        token is accepted and every one of ``compare`` holds, the fence is raised (as
        :meth:`check` does) and all of ``ops`` are applied; otherwise nothing is.

        ``ops`` are ``RequestOp`` messages (:func:`put`, :func:`delete`, :func:`get`, or
        etcetra's own); ``compare`` are ``Compare`` messages (:func:`value_is`,
        :func:`version_is`, :func:`mod_revision_is`). Returns the ``ResponseOp`` of each
        of ``ops``.

        Raises:
            StaleTokenError: the token is stale; nothing was applied.
            EtcdCompareFailed: one of ``compare`` failed; nothing was applied.
        """
        check_fence(resource, None, token)
        return await self._apply(resource, token, ops=ops, compare=compare, lock_key=lock_key)

    async def read(self, resource: str) -> ValueT | None:
        stored = await self.read_versioned(resource)
        return None if stored is None else stored.value

    async def read_versioned(self, resource: str) -> Versioned[ValueT] | None:
        key = self.prefix(resource) + b"value"
        link = await self._ready()
        kv = _found(await link.txn(txn((), [op_range(key)]), "read a value")).get(key)
        return None if kv is None else Versioned(self.codec.decode(kv.value), kv.version)

    async def fence(self, resource: str) -> Fence | None:
        key = self.prefix(resource) + b"fence"
        link = await self._ready()
        kv = _found(await link.txn(txn((), [op_range(key)]), "read a fence")).get(key)
        return None if kv is None else _fence(resource, key, kv.value)

    # -- the algorithm --------------------------------------------------------------------------

    async def _apply(
        self,
        resource: str,
        token: FencingToken,
        *,
        data: bytes | None = None,
        expect_version: int | None = None,
        ops: Sequence[Any] = (),
        compare: Sequence[Any] = (),
        lock_key: bytes | None = None,
    ) -> list[Any]:
        """Read, decide with check_fence, then one Txn comparing what was read. When a
        compare fails, the Txn's failure branch has read the keys again: decide again."""
        prefix = self.prefix(resource)
        fence_key, value_key = prefix + b"fence", prefix + b"value"
        link = await self._ready()
        record = _record(token)
        accepted = Fence(resource, int(token), token.owner, token.name, token.backend)
        reads = [op_range(prefix, prefix_end(prefix))]
        if lock_key is not None:
            reads.append(op_range(lock_key))
        state = await link.txn(txn((), reads), "read a fence")
        while True:
            found = _found(state)
            fence_kv, value_kv = found.get(fence_key), found.get(value_key)
            fence = None if fence_kv is None else _fence(resource, fence_key, fence_kv.value)
            check_fence(resource, fence, token)  # StaleTokenError: nothing written
            seen = [fence_kv.mod_revision if fence_kv else 0]
            compares = [mod_revision_is(fence_key, seen[0])]
            puts = [] if fence == accepted else [op_put(fence_key, record, 0)]
            if lock_key is not None:
                holder = state.responses[1].response_range.kvs
                seen.append(holder[0].create_revision if holder else 0)
                if seen[-1] != int(token):
                    raise StaleTokenError(
                        resource,
                        token,
                        None if fence is None else fence.token,
                        f"the lock key {lock_key.decode(errors='replace')!r} no longer "
                        "exists with this token's revision: the holder's lease ended",
                    )
                compares.append(etcd.created_at(lock_key, int(token)))
            if data is not None:
                version = value_kv.version if value_kv else 0
                if expect_version is not None and expect_version != version:
                    raise WriteConflictError(resource, expect_version, version)
                if expect_version is not None:  # else the fence's compare is enough
                    seen.append(value_kv.mod_revision if value_kv else 0)
                    compares.append(mod_revision_is(value_key, seen[-1]))
                puts.append(op_put(value_key, data, 0))
            reply = await link.txn(
                txn([*compares, *compare], [*puts, *ops], reads), "write under the fence"
            )
            if reply.succeeded:
                return list(reply.responses[len(puts) :])
            versioned = expect_version is not None
            if compare and self._unchanged(reply, fence_key, value_key, seen, versioned):
                raise EtcdCompareFailed(
                    f"a compare given with the operations on {resource!r} failed; "
                    "nothing was applied"
                )
            state = reply  # what is stored now: decide again

    @staticmethod
    def _unchanged(
        reply: Any, fence_key: bytes, value_key: bytes, seen: list[int], with_value: bool
    ) -> bool:
        """Whether the keys the guard compared are as it read them (then a compare of
        the caller's failed)."""
        found = _found(reply)
        fence_kv, value_kv = found.get(fence_key), found.get(value_key)
        now = [fence_kv.mod_revision if fence_kv else 0]
        if len(reply.responses) > 1:
            holder = reply.responses[1].response_range.kvs
            now.append(holder[0].create_revision if holder else 0)
        if with_value:
            now.append(value_kv.mod_revision if value_kv else 0)
        return now == seen
