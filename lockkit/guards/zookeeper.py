"""A guard over ZooKeeper: ``ZooKeeperGuard``.

URL grammar (the ZooKeeper backend's, with the guard's own ``root``)::

    zookeeper://[user:password@]host[:2181][,host[:2181]...][/chroot][?option=value...]

===================  ================  =================================================
``root``             /lockkit-guards   parent of every resource's fence node
``timeout``          5                 seconds per request
``session_timeout``  10                seconds asked for the session
``connect_timeout``  10                seconds to reach a server when first used
===================  ================  =================================================

Layout: resource ``R`` is two persistent nodes, ``{root}/{R}`` holding its fence record
(JSON: ``{"lockkit-fence":1,"token":..,"owner":..,"lock":..,"backend":..}``) and
``{root}/{R}/value`` holding the codec's bytes as they are, so any ZooKeeper client can
read the value. ``R`` is %-encoded as lock names are (``/`` cannot split it). The
version of :meth:`~ZooKeeperGuard.read_versioned` is the value node's data version
plus one (1 after the first write). ``check()`` touches the fence node only.

Atomicity: a write reads the fence node (data and stat) and the value node's stat,
applies :func:`~lockkit.abc.check_fence` to what it read, then sends one ``multi``:
the fence node's ``create``, ``check`` (same token again) or ``set_data`` at the
version it read, and the value node's ``create`` or ``set_data`` (at the version it
read when the write has ``expect_version``; else the fence node's version is what
matters: any newer token changes it). If anything that matters was written in between,
a version no longer matches and the server applies nothing; the guard reads again and
decides again, so a decision is always taken on current data. A ``sync`` goes before
every read, so a follower that lags the leader cannot answer with old data.

The caller's own mutation: :meth:`~ZooKeeperGuard.multi` runs ZooKeeper operations
(:class:`Create`, :class:`SetData`, :class:`Delete`, :class:`Check`) in the same
``multi`` as the fence check.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from typing import Any, ClassVar, Final, Generic, TypeVar, final

import aiozk
from aiozk import exc as zk_errors

from .._core._clock import MonotonicClock
from .._core._errors import BackendUnavailable, ConfigurationError, LockError, WriteConflictError
from .._core._names import validate_name
from .._core._options import as_seconds, option, parse_options
from .._core._token import FencingToken
from .._core._url import LockURL, parse_url
from .._drivers import zookeeper as zk
from .._drivers.zookeeper.link import Link
from .._drivers.zookeeper.options import (
    ZKClientP,
    ZooKeeperOptions,
    as_root,
    client_from_url,
    digest_credentials,
)
from ..abc import Fence, Guard, GuardCapability, Versioned, check_fence
from ._codec import JSON, Codec

__all__ = (
    "Check",
    "Create",
    "Delete",
    "SetData",
    "ZooKeeperGuard",
    "ZooKeeperGuardOptions",
    "ZooKeeperOpFailed",
)

ValueT = TypeVar("ValueT")

#: Name of the value node below a resource's fence node.
VALUE_NODE: Final = "value"
_MARK: Final = "lockkit-fence"
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile", "tls")
#: Replies that are not the failing operation of a failed multi.
_NOT_THE_CAUSE = (zk_errors.RolledBack, zk_errors.RuntimeInconsistency)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ZooKeeperGuardOptions:
    """Options of :class:`ZooKeeperGuard` (URL query or keywords; keywords win)."""

    #: Parent of every resource's fence node.
    root: str = option("/lockkit-guards", as_root)
    #: Seconds one request may wait for its reply.
    timeout: float = option(5.0, as_seconds)
    #: Session timeout asked of the server (URLs only).
    session_timeout: float = option(10.0, as_seconds)
    #: Seconds the first use may take to reach a server (URLs only).
    connect_timeout: float = option(10.0, as_seconds)


_CLIENT_OPTIONS: Final = frozenset({"root", "timeout"})


# -- the caller's operations -----------------------------------------------------------


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Create:
    """Create a persistent node (its parent must exist). Result: the path created."""

    path: str
    data: bytes = b""


@final
@dataclasses.dataclass(frozen=True, slots=True)
class SetData:
    """Replace a node's data if it is at data ``version`` (-1: any). Result: the new
    data version."""

    path: str
    data: bytes
    version: int = -1


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Delete:
    """Delete a node (without children) if it is at data ``version`` (-1: any)."""

    path: str
    version: int = -1


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    """Fail the whole multi unless the node is at data ``version``."""

    path: str
    version: int


Op = Create | SetData | Delete | Check


class ZooKeeperOpFailed(LockError):
    """One of the caller's operations in :meth:`ZooKeeperGuard.multi` failed, so the
    server applied nothing (the fence was not raised either).

    Attributes:
        op: the operation that failed.
        index: its position in the list given.
        error: ZooKeeper's name of the failure (``"NoNode"``, ``"NodeExists"``,
            ``"BadVersion"``, ``"NotEmpty"``...).
    """

    def __init__(self, op: Op, index: int, error: str) -> None:
        self.op, self.index, self.error = op, index, error
        super().__init__(f"operation {index} ({type(op).__name__} {op.path!r}) failed: {error}")


# -- the fence record -------------------------------------------------------------------


def _record(token: FencingToken) -> bytes:
    fields = {
        _MARK: 1,
        "token": int(token),
        "owner": token.owner,
        "lock": token.name,
        "backend": token.backend,
    }
    return json.dumps(fields, separators=(",", ":")).encode()


def _fence(resource: str, path: str, data: bytes) -> Fence:
    try:
        fields = json.loads(data)
        if fields.get(_MARK) != 1:
            raise ValueError
        return Fence(resource, fields["token"], fields["owner"], fields["lock"], fields["backend"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigurationError(
            f"the node {path!r} holds no lockkit fence record: is the guard's root shared "
            "with something else?"
        ) from None


def _failure(replies: Sequence[Any]) -> int | None:
    """Index of the operation that made a multi fail, or None if it was applied."""
    for i, reply in enumerate(replies):
        if isinstance(reply, zk_errors.ResponseError) and not isinstance(reply, _NOT_THE_CAUSE):
            return i
    return None


# -- the guard ---------------------------------------------------------------------------


@final
class ZooKeeperGuard(Guard[ValueT], Generic[ValueT]):
    """Values in ZooKeeper under a fence node each, written with one versioned ``multi``.
    See the module docstring for the layout and why it is atomic.

    Build it with :meth:`from_url` or :meth:`from_client`; it connects when first used
    (or entered) and closes what it opened in :meth:`aclose`.

    .. versionadded:: 0.1
    """

    kind: ClassVar[str] = "zookeeper"
    capabilities: ClassVar[frozenset[GuardCapability]] = frozenset(
        {GuardCapability.READ, GuardCapability.CHECK, GuardCapability.VERSIONED}
    )

    def __init__(
        self,
        client: ZKClientP,
        options: ZooKeeperGuardOptions = ZooKeeperGuardOptions(),
        *,
        codec: Codec[ValueT],
        credentials: bytes | None = None,
        owned: bool = False,
    ) -> None:
        self.options = options
        self.codec = codec
        self._client = client
        self._credentials = credentials
        self._owned = owned
        self._link: Link | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    @classmethod
    def from_url(
        cls, url: str | LockURL, *, codec: Codec[Any] = JSON, **options: Any
    ) -> ZooKeeperGuard[Any]:
        """A guard with a client of its own for ``url`` (``zookeeper://`` or ``zk://``).

        Args:
            url: the servers, optional ``user:password@`` (digest) and ``/chroot``.
            codec: how values become node data (:data:`~lockkit.guards.JSON` by default).
            **options: see :class:`ZooKeeperGuardOptions`.
        """
        parsed = parse_url(url) if isinstance(url, str) else url
        if parsed.scheme not in ("zookeeper", "zk"):
            raise ConfigurationError(f"ZooKeeperGuard takes zookeeper:// URLs, not {parsed.scheme}")
        if any(k in _TLS_OPTIONS for k in (*parsed.query, *options)):
            raise ConfigurationError("the ZooKeeper guard cannot use TLS: aiozk speaks plain TCP")
        opts = parse_options(ZooKeeperGuardOptions, "zookeeper guard", parsed.query, options)
        client = client_from_url(
            parsed,
            ZooKeeperOptions(
                session_timeout=opts.session_timeout, connect_timeout=opts.connect_timeout
            ),
        )
        credentials = digest_credentials(parsed)
        return cls(client, opts, codec=codec, credentials=credentials, owned=True)

    @classmethod
    def from_client(
        cls, client: aiozk.ZKClient, *, codec: Codec[Any] = JSON, **options: Any
    ) -> ZooKeeperGuard[Any]:
        """Use the application's ``aiozk.ZKClient`` (started on first use if it is not);
        the guard never closes it, and creates nodes with the client's ``default_acl``.

        Args:
            client: the application's client.
            codec: how values become node data.
            **options: ``root`` and ``timeout``.
        """
        opts = parse_options(
            ZooKeeperGuardOptions, "zookeeper guard", {}, options, allowed=set(_CLIENT_OPTIONS)
        )
        return cls(client, opts, codec=codec)

    def __repr__(self) -> str:
        return f"<ZooKeeperGuard root={self.options.root!r} codec={self.codec!r}>"

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> ZooKeeperGuard[ValueT]:
        await self._ready()
        return self

    async def _ready(self) -> Link:
        if self._link is not None:
            return self._link
        if self._closed:
            raise BackendUnavailable("the ZooKeeper guard is closed")
        async with self._opening:
            if self._link is None:
                link = Link(
                    self._client,
                    MonotonicClock(),
                    timeout=self.options.timeout,
                    credentials=self._credentials,
                    owned=self._owned,
                )
                self._credentials = None
                await link.open(self.options.connect_timeout)
                try:
                    await self._make_root(link)
                except BaseException:
                    await link.close()
                    raise
                self._link = link
        return self._link

    async def _make_root(self, link: Link) -> None:
        """Create the root and its parents (persistent nodes) where missing."""
        parts = [p for p in self.options.root.split("/") if p]
        for depth in range(1, len(parts) + 1):
            path = link.path(*parts[:depth])
            reply = await link.call(zk.persistent(path, link.acl, b""), "create the guard's root")
            if isinstance(reply, Exception) and not isinstance(reply, zk.NodeExists):
                raise zk.driver_error(reply, "create the guard's root")

    async def aclose(self) -> None:
        self._closed = True
        link, self._link = self._link, None
        if link is not None:
            await link.close()

    # -- paths -------------------------------------------------------------------------

    def path(self, resource: str) -> str:
        """The fence node of ``resource``, below the chroot (the value node is its
        child ``value``)."""
        validate_name(resource, "resource")
        root = self.options.root
        return f"{root.rstrip('/')}/{zk.encode_name(resource, at_top=root == '/')}"

    # -- the guard's operations ------------------------------------------------------------

    async def write(
        self,
        resource: str,
        value: ValueT,
        *,
        token: FencingToken,
        expect_version: int | None = None,
    ) -> None:
        check_fence(resource, None, token)  # a FencingToken, before anything else
        data = self.codec.encode(value)
        await self._apply(resource, token, data=data, expect_version=expect_version)

    async def check(self, resource: str, *, token: FencingToken) -> None:
        check_fence(resource, None, token)
        await self._apply(resource, token)

    async def multi(
        self, resource: str, ops: Sequence[Op], *, token: FencingToken
    ) -> list[str | int | None]:
        """Run the caller's operations in the same ``multi`` as the fence check: all of
        them are applied and the fence is raised (as :meth:`check` does), or nothing is.

        Paths are below the client's chroot, as the application sees them. Returns one
        result per operation: the path a :class:`Create` made, the new data version
        after a :class:`SetData`, ``None`` for :class:`Delete` and :class:`Check`.

        Raises:
            StaleTokenError: the token is stale; nothing was applied.
            ZooKeeperOpFailed: one of ``ops`` failed; nothing was applied.
        """
        check_fence(resource, None, token)
        return await self._apply(resource, token, ops=ops)

    async def read(self, resource: str) -> ValueT | None:
        stored = await self.read_versioned(resource)
        return None if stored is None else stored.value

    async def read_versioned(self, resource: str) -> Versioned[ValueT] | None:
        path = self.path(resource)
        link = await self._ready()
        node = link.path(path, VALUE_NODE)
        _, reply = await link.call_many((zk.sync(node), zk.get_data(node)), "read a value")
        if isinstance(reply, zk.NoNode):
            return None
        if isinstance(reply, Exception):
            raise zk.driver_error(reply, "read a value")
        return Versioned(self.codec.decode(reply.data or b""), reply.stat.version + 1)

    async def fence(self, resource: str) -> Fence | None:
        path = self.path(resource)
        link = await self._ready()
        node = link.path(path)
        _, reply = await link.call_many((zk.sync(node), zk.get_data(node)), "read a fence")
        if isinstance(reply, zk.NoNode):
            return None
        if isinstance(reply, Exception):
            raise zk.driver_error(reply, "read a fence")
        return _fence(resource, node, reply.data or b"")

    # -- the algorithm -------------------------------------------------------------------

    async def _apply(
        self,
        resource: str,
        token: FencingToken,
        *,
        data: bytes | None = None,
        expect_version: int | None = None,
        ops: Sequence[Op] = (),
    ) -> list[str | int | None]:
        """Read, decide with check_fence, write with a multi at the versions read; when
        a version moved in between, the server applies nothing: read and decide again."""
        fence_path = self.path(resource)
        link = await self._ready()
        fence_node = link.path(fence_path)
        value_node = link.path(fence_path, VALUE_NODE)
        record = _record(token)
        theirs = [self._request(link, op) for op in ops]
        while True:
            reads = [zk.sync(fence_node), zk.get_data(fence_node)]
            if data is not None:
                reads.append(zk.exists(value_node))
            replies = await link.call_many(reads, "read a fence")
            fenced = replies[1]
            if isinstance(fenced, Exception) and not isinstance(fenced, zk.NoNode):
                raise zk.driver_error(fenced, "read a fence")
            current = None if isinstance(fenced, zk.NoNode) else fenced
            fence = None if current is None else _fence(resource, fence_node, current.data or b"")
            check_fence(resource, fence, token)  # StaleTokenError: nothing written
            if current is None:
                steps = [zk.persistent(fence_node, link.acl, record)]
            elif fence == Fence(resource, int(token), token.owner, token.name, token.backend):
                steps = [zk.check(fence_node, current.stat.version)]  # the same holder again
            else:
                steps = [zk.set_data(fence_node, record, current.stat.version)]
            if data is not None:
                stat = replies[2]
                if isinstance(stat, Exception) and not isinstance(stat, zk.NoNode):
                    raise zk.driver_error(stat, "read a value's version")
                missing = isinstance(stat, zk.NoNode)
                version = 0 if missing else stat.stat.version + 1
                if expect_version is not None and expect_version != version:
                    raise WriteConflictError(resource, expect_version, version)
                if missing:
                    steps.append(zk.persistent(value_node, link.acl, data))
                else:  # without expect_version, the fence node's version is enough
                    at = -1 if expect_version is None else stat.stat.version
                    steps.append(zk.set_data(value_node, data, at))
            ours = len(steps)
            reply = await link.call(zk.multi(*steps, *theirs), "write under the fence")
            if isinstance(reply, Exception):
                raise zk.driver_error(reply, "write under the fence")
            failed = _failure(reply.responses)
            if failed is None:
                return [self._result(link, r) for r in reply.responses[ours:]]
            if failed >= ours:
                cause = reply.responses[failed]
                raise ZooKeeperOpFailed(ops[failed - ours], failed - ours, type(cause).__name__)
            if failed == 0 and current is None and isinstance(reply.responses[0], zk.NoNode):
                await self._make_root(link)  # someone deleted the root
            # a version moved (or a node appeared) since the read: decide again

    @staticmethod
    def _request(link: Link, op: Op) -> Any:
        path = link.path(op.path)
        if isinstance(op, Create):
            return zk.persistent(path, link.acl, op.data)
        if isinstance(op, SetData):
            return zk.set_data(path, op.data, op.version)
        if isinstance(op, Delete):
            request = zk.delete(path)
            request.version = op.version
            return request
        if isinstance(op, Check):
            return zk.check(path, op.version)
        raise TypeError(f"not a ZooKeeper guard operation: {op!r}")

    @staticmethod
    def _result(link: Link, reply: Any) -> str | int | None:
        path = getattr(reply, "path", None)
        if isinstance(path, str):
            return path[len(link.chroot) :] or "/"
        stat = getattr(reply, "stat", None)
        return None if stat is None else int(stat.version)
