"""Fencing for Kafka: a transactional producer bound to a lock, and a consumer-side filter.

Kafka is a log, not a key/value store, so fencing takes two shapes here:

- :meth:`KafkaGuard.producer` gives the holder of a lock a producer whose
  ``transactional_id`` is derived from the lock name. Starting a producer with a
  transactional id makes the broker bump the id's epoch and abort the previous producer's
  open transaction, so when the next holder of the lock starts its producer, every later
  commit of the previous holder's producer is refused by the broker
  (aiokafka's ``ProducerFenced``, raised here as :class:`ProducerFencedError`, a
  :class:`~lockkit.StaleTokenError`). Every record carries the token, its owner, the lock
  name and the backend in headers. The process also refuses, without asking the broker,
  a token older than one it already used for that lock.
- :class:`TokenFilter` is for topics written without transactions (or read with
  ``read_uncommitted``): it drops every record whose token its own rule would refuse
  for the record's key, the rule every lockkit guard applies (:func:`lockkit.abc.check_fence`).

Why this is not a :class:`lockkit.abc.Guard`
--------------------------------------------
A guard answers ``fence(resource)`` with the highest token accepted for a resource, and
refuses an older token for that resource atomically in the storage, whichever process
offers it. The broker keeps no such thing: it fences *producers*, per transactional id,
in the order they *started*, and knows nothing of tokens or record keys. ``fence()``
could only be answered from this process's memory, which a second process does not
share (the conformance check "the fence survives a new guard" would pass only because
the test runs in one process), or by reading the topic back before each write, which is
not atomic with the write. So this module offers no ``Guard`` and has no row in the guard
conformance table; the tests in ``tests/guards/kafka/`` check what the broker does
guarantee.

What the broker guarantees, and what it does not
------------------------------------------------
Once the next holder's producer has *started*, the previous holder's producer can commit
nothing: its open transaction is aborted and every later request fails. The order is the
order of ``start``, not of tokens: a paused holder that starts its producer only *after*
the next holder started theirs fences the next holder instead, and commits records with
its older token. The token headers make those records recognisable: a consumer that
runs them through a :class:`TokenFilter` drops them. Consumers of a fenced topic should
read with ``isolation_level="read_committed"`` (an aborted record is otherwise
delivered) and, where a late start is possible, filter too.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Any, ClassVar, Final, Literal, Protocol, TypeVar, final

import anyio
from aiokafka import AIOKafkaProducer
from aiokafka.errors import ProducerFenced

from .._core._errors import ConfigurationError, LockUsageError, StaleTokenError
from .._core._names import validate_name
from .._core._token import FencingToken
from .._core._url import parse_url
from ..abc import Fence, check_fence
from ._codec import JSON, Codec

__all__ = (
    "HEADER_BACKEND",
    "HEADER_LOCK",
    "HEADER_OWNER",
    "HEADER_TOKEN",
    "FencedProducer",
    "KafkaGuard",
    "ProducedRecord",
    "ProducerFencedError",
    "TokenFilter",
    "token_headers",
    "token_of",
)

#: Record header holding the token as decimal ASCII digits.
HEADER_TOKEN: Final = "lockkit-token"
#: Record header holding the id of the acquisition the token belongs to (UTF-8).
HEADER_OWNER: Final = "lockkit-owner"
#: Record header holding the name of the lock that minted the token (UTF-8).
HEADER_LOCK: Final = "lockkit-lock"
#: Record header holding the backend kind that minted the token (UTF-8).
HEADER_BACKEND: Final = "lockkit-backend"

_DEFAULT_PORT: Final = 9092
#: Producer options the guard sets itself.
_RESERVED_OPTIONS: Final = frozenset(
    {"bootstrap_servers", "transactional_id", "enable_idempotence", "acks"}
)


class ProducerFencedError(StaleTokenError):
    """The broker fenced this producer: a newer producer with the same transactional id
    (the next holder of the lock) started, so nothing more of this one is committed, and
    its open transaction was aborted. aiokafka's ``ProducerFenced`` is the ``__cause__``
    (absent when the producer was already known to be fenced). ``current`` is ``None``:
    the broker does not say which token fenced it.

    .. versionadded:: 0.1
    """


@final
@dataclasses.dataclass(frozen=True, slots=True)
class ProducedRecord:
    """Where the broker put a record (inside a transaction: once it is committed)."""

    topic: str
    partition: int
    offset: int


def token_headers(token: FencingToken) -> list[tuple[str, bytes]]:
    """The headers a :class:`FencedProducer` adds to each record, for producers of your
    own that write records a :class:`TokenFilter` should judge."""
    check_fence("", None, token)  # the TypeError for anything but a FencingToken
    return [
        (HEADER_TOKEN, str(int(token)).encode()),
        (HEADER_OWNER, token.owner.encode()),
        (HEADER_LOCK, token.name.encode()),
        (HEADER_BACKEND, token.backend.encode()),
    ]


class _Record(Protocol):
    """What :class:`TokenFilter` reads of a record (aiokafka's ``ConsumerRecord`` fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


RecordT = TypeVar("RecordT", bound=_Record)


class _Malformed(ValueError):
    pass


def _token_from_headers(headers: Iterable[tuple[str, bytes]]) -> FencingToken | None:
    found: dict[str, bytes] = {}
    for name, value in headers or ():
        if name in (HEADER_TOKEN, HEADER_OWNER, HEADER_LOCK, HEADER_BACKEND):
            found.setdefault(name, bytes(value) if value is not None else b"")
    if HEADER_TOKEN not in found:
        return None
    try:
        digits = found[HEADER_TOKEN].decode("ascii")
        if not digits.isdigit():
            raise ValueError(digits)
        return FencingToken(
            int(digits),
            name=found[HEADER_LOCK].decode(),
            backend=found[HEADER_BACKEND].decode(),
            owner=found[HEADER_OWNER].decode(),
        )
    except (KeyError, ValueError) as exc:
        raise _Malformed(str(exc)) from exc


def token_of(record: _Record) -> FencingToken | None:
    """The token a record was written with (rebuilt from its headers), or ``None`` if
    it has no token header.

    Raises:
        ValueError: the record has a token header but the headers are incomplete or
            not well formed.
    """
    return _token_from_headers(record.headers)


@final
class TokenFilter:
    """Drops records whose token is stale for their key: per ``(topic, key)``, a record is
    accepted by the same rule every lockkit guard applies (:func:`lockkit.abc.check_fence`):
    no record accepted yet, or a token of the same lock and backend that is higher, or
    equal and from the same acquisition. An accepted record raises the key's fence.

    Records of one key go to one partition (with the default partitioner), so each
    consumer of a group sees all records of the keys it reads, in order. Records with no
    key are judged per topic. The fences live in this object: a consumer that restarts
    from committed offsets starts with none (seed it by reading the topic from the start,
    or accept that the first record per key after a restart is taken as it comes).

    Args:
        unfenced: what to do with a record that has no token header: ``"pass"`` (the
            default: the topic also carries records from writers that take no lock) or
            ``"drop"``. A record whose token headers are present but broken is always
            dropped.

    .. code-block:: python

        tokens = TokenFilter()
        async for record in tokens.records(consumer):  # an AIOKafkaConsumer
            apply(record)

    .. versionadded:: 0.1
    """

    def __init__(self, *, unfenced: Literal["pass", "drop"] = "pass") -> None:
        if unfenced not in ("pass", "drop"):
            raise ConfigurationError(f"unfenced must be 'pass' or 'drop', got {unfenced!r}")
        self.unfenced = unfenced
        self._fences: dict[tuple[str, bytes | None], Fence] = {}
        #: Records accepted so far.
        self.accepted = 0
        #: Records dropped so far (stale, broken, or unfenced with ``unfenced="drop"``).
        self.dropped = 0

    @staticmethod
    def _resource(topic: str, key: bytes | None) -> str:
        if key is None:
            return topic
        return f"{topic}:{key.decode(errors='backslashreplace')}"

    def accept(self, record: _Record) -> bool:
        """True if ``record`` should be applied; an accepted record's token becomes its
        key's fence."""
        try:
            token = _token_from_headers(record.headers)
        except _Malformed:
            self.dropped += 1
            return False
        if token is None:
            keep = self.unfenced == "pass"
        else:
            where = (record.topic, record.key)
            resource = self._resource(*where)
            try:
                check_fence(resource, self._fences.get(where), token)
            except StaleTokenError:
                keep = False
            else:
                keep = True
                self._fences[where] = Fence(
                    resource, int(token), token.owner, token.name, token.backend
                )
        if keep:
            self.accepted += 1
        else:
            self.dropped += 1
        return keep

    def fence(self, topic: str, key: bytes | str | None) -> Fence | None:
        """The highest token accepted so far for ``key`` in ``topic``, or ``None``."""
        raw = key.encode() if isinstance(key, str) else key
        return self._fences.get((topic, raw))

    async def records(self, consumer: AsyncIterable[RecordT]) -> AsyncGenerator[RecordT, None]:
        """The records of ``consumer`` (anything ``async for`` reads records from, such as
        an ``AIOKafkaConsumer``) that :meth:`accept` keeps."""
        async for record in consumer:
            if self.accept(record):
                yield record

    def __repr__(self) -> str:
        return (
            f"<TokenFilter keys={len(self._fences)} accepted={self.accepted} "
            f"dropped={self.dropped} unfenced={self.unfenced!r}>"
        )


# -- the tokens this process used, per transactional id -------------------------------

_used_lock = threading.Lock()
_used: dict[str, Fence] = {}


def _check_local(transactional_id: str, token: FencingToken, *, record: bool) -> None:
    """Refuse ``token`` if this process already used a token for the same transactional
    id that :func:`check_fence` puts ahead of it; remember it if ``record``."""
    with _used_lock:
        check_fence(transactional_id, _used.get(transactional_id), token)
        if record:
            _used[transactional_id] = Fence(
                transactional_id, int(token), token.owner, token.name, token.backend
            )


# -- aiokafka internals ----------------------------------------------------------------


def _retrieve_failures(producer: Any) -> None:
    """Mark as retrieved the futures aiokafka failed with the fencing error and that
    nobody awaits (the transaction's end, and the drain of a batch that was never sent),
    so that no "Future exception was never retrieved" is logged when they are collected.

    This reads aiokafka internals, defensively: with other internals it does nothing.
    """
    futures: list[object] = []
    manager = getattr(producer, "_txn_manager", None)
    waiter = getattr(manager, "_transaction_waiter", None)
    futures.append(waiter)
    accumulator = getattr(producer, "_message_accumulator", None)
    queued = getattr(accumulator, "_batches", None)
    pending = getattr(accumulator, "_pending_batches", None)
    batches = itertools.chain(
        itertools.chain.from_iterable(queued.values()) if isinstance(queued, Mapping) else (),
        pending if isinstance(pending, Iterable) else (),
    )
    for batch in list(batches):
        futures.append(getattr(batch, "future", None))
        futures.append(getattr(batch, "_drain_waiter", None))
        for entry in getattr(batch, "_msg_futures", ()):
            if isinstance(entry, tuple) and entry:
                futures.append(entry[0])
    for future in futures:
        if isinstance(future, asyncio.Future) and future.done() and not future.cancelled():
            future.exception()


def _is_fatal(producer: Any) -> bool:
    manager = getattr(producer, "_txn_manager", None)
    check = getattr(manager, "is_fatal_error", None)
    return bool(check()) if callable(check) else False


# -- the producer ----------------------------------------------------------------------


@final
class FencedProducer:
    """A transactional producer for the holder of one lock: get it from
    :meth:`KafkaGuard.producer` and use it as an async context manager.

    Every record is written inside a Kafka transaction. :meth:`send` alone is one
    transaction per record: when it returns, the record is committed (visible to
    ``read_committed`` consumers) and the broker had not fenced this producer. Several
    records go into one transaction with :meth:`transaction`: all of them are committed
    at the end of the block, or none (on an exception, or if the producer was fenced
    meanwhile). One commit per batch costs one coordinator round trip for all records,
    instead of one per record.

    Once fenced, the producer is closed at once (aiokafka's own futures included, so
    nothing is logged about them), and every later call raises
    :class:`ProducerFencedError`.

    .. versionadded:: 0.1
    """

    def __init__(self, guard: KafkaGuard, token: FencingToken) -> None:
        check_fence("", None, token)  # TypeError for anything but a FencingToken
        validate_name(token.name, "lock name")
        self._guard = guard
        self.token: Final = token
        #: The producer's ``transactional_id`` (the same for every holder of the lock).
        self.transactional_id: Final = guard.transactional_id(token.name)
        self._producer: Any = None
        self._headers = token_headers(token)
        self._mutex = asyncio.Lock()
        self._batch_task: asyncio.Task[Any] | None = None
        self._fenced: BaseException | None = None
        self._closed = False
        self._started = False

    @property
    def fenced(self) -> bool:
        """True once the broker fenced the producer (it is closed then)."""
        return self._fenced is not None

    async def start(self) -> None:
        """Start the producer; the broker then fences every earlier producer of the
        lock. Done by ``async with``.

        Raises:
            StaleTokenError: this process already used a newer token for the lock.
        """
        if self._started:
            raise LockUsageError("this producer was already started")
        self._started = True
        _check_local(self.transactional_id, self.token, record=False)
        producer = AIOKafkaProducer(
            **self._guard._options,
            bootstrap_servers=self._guard.bootstrap_servers,
            transactional_id=self.transactional_id,
            enable_idempotence=True,
            acks="all",
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer
        try:
            _check_local(self.transactional_id, self.token, record=True)
        except BaseException:
            await self._close()
            raise
        self._guard._live.add(self)

    def _refuse_if_fenced(self) -> None:
        if self._fenced is not None:
            raise self._fenced_error()
        if self._closed or self._producer is None:
            raise LockUsageError("the producer is not started, or already closed")
        _check_local(self.transactional_id, self.token, record=False)

    def _fenced_error(self) -> ProducerFencedError:
        return ProducerFencedError(
            self.transactional_id,
            self.token,
            None,
            f"the broker fenced the producer of lock {self.token.name!r}: a newer holder "
            "started its producer, so nothing more of this one is committed",
        )

    async def _on_failure(self, exc: BaseException) -> None:
        """After ``exc`` in a transaction: if it is the fence, close and raise ours."""
        if isinstance(exc, ProducerFenced) or _is_fatal(self._producer):
            self._fenced = exc
            await self._close()
            raise self._fenced_error() from exc

    async def send(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | None = None,
        partition: int | None = None,
        headers: Iterable[tuple[str, bytes]] = (),
        timestamp_ms: int | None = None,
    ) -> ProducedRecord:
        """Write one record (``codec.encode(value)``) with the token headers added to
        ``headers``. Outside :meth:`transaction` it is a transaction of its own,
        committed before this returns; inside, it is committed with the block.

        Raises:
            ProducerFencedError: the broker fenced this producer; nothing is committed.
            StaleTokenError: this process used a newer token for the lock since.
        """
        extra = list(headers)
        if any(name.startswith("lockkit-") for name, _ in extra):
            raise ValueError("headers named lockkit-* are the guard's own")
        data = self._guard.codec.encode(value)
        raw_key = key.encode() if isinstance(key, str) else key
        if self._batch_task is not None and self._batch_task is asyncio.current_task():
            return await self._send(topic, data, raw_key, partition, extra, timestamp_ms)
        async with self._mutex, self._transaction():
            return await self._send(topic, data, raw_key, partition, extra, timestamp_ms)

    async def _send(
        self,
        topic: str,
        data: bytes,
        key: bytes | None,
        partition: int | None,
        extra: list[tuple[str, bytes]],
        timestamp_ms: int | None,
    ) -> ProducedRecord:
        self._refuse_if_fenced()
        try:
            meta = await self._producer.send_and_wait(
                topic,
                data,
                key=key,
                partition=partition,
                headers=[*self._headers, *extra],
                timestamp_ms=timestamp_ms,
            )
        except Exception as exc:
            await self._on_failure(exc)
            raise
        return ProducedRecord(str(meta.topic), int(meta.partition), int(meta.offset))

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[FencedProducer]:
        """One transaction for every :meth:`send` of the block (by the task that opened
        it; other tasks' sends wait for the block to end): committed when the block
        ends, aborted if it raises. Blocks do not nest.

        Raises:
            ProducerFencedError: the broker fenced this producer; nothing of the block
                is committed.
        """
        if self._batch_task is not None and self._batch_task is asyncio.current_task():
            raise LockUsageError("transactions of a FencedProducer do not nest")
        async with self._mutex, self._transaction():
            self._batch_task = asyncio.current_task()
            try:
                yield self
            finally:
                self._batch_task = None

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        """Begin a transaction; commit it if the block ends well, else abort it, unless
        the producer was fenced meanwhile (then it is closed already, and the broker
        aborted the transaction). Run under the mutex."""
        self._refuse_if_fenced()
        producer = self._producer
        try:
            await producer.begin_transaction()
        except Exception as exc:
            await self._on_failure(exc)
            raise
        try:
            yield
        except BaseException:
            if self._producer is producer and not _is_fatal(producer):
                await self._abort(producer)
            raise
        try:
            await producer.commit_transaction()
        except Exception as exc:
            await self._on_failure(exc)
            raise

    async def _abort(self, producer: Any) -> None:
        """Abort the open transaction, even in a cancelled task; if that fails or takes
        longer than a request may, close the producer (the broker aborts the
        transaction when the next producer of the lock starts, or when it times out)."""
        aborted = False
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._guard._abort_timeout):
            try:
                await producer.abort_transaction()
                aborted = True
            except Exception as exc:
                with contextlib.suppress(StaleTokenError):
                    await self._on_failure(exc)
        if not aborted:
            with anyio.CancelScope(shield=True):
                await self._close()

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._guard._live.discard(self)
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            await producer.stop()
        finally:
            if self._fenced is not None or _is_fatal(producer):
                _retrieve_failures(producer)

    async def aclose(self) -> None:
        """Flush and close the producer (a transaction still open is aborted by the
        broker when it times out, or when the next producer of the lock starts).
        Idempotent."""
        await self._close()

    async def __aenter__(self) -> FencedProducer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    def __repr__(self) -> str:
        state = "fenced" if self.fenced else "closed" if self._closed else "open"
        return f"<FencedProducer {self.transactional_id!r} token={int(self.token)} {state}>"


@final
class KafkaGuard:
    """Makes fenced producers for lock holders (see the module documentation for what
    the broker guarantees, and why this is not a :class:`lockkit.abc.Guard`).

    Args:
        bootstrap_servers: ``"host:port"``, several separated by commas, a list of them,
            or a URL ``kafka://host:port[,host:port...]``.
        prefix: prepended to the lock name to make the ``transactional_id``. Every
            service writing under one lock must use the same prefix.
        codec: turns the values given to :meth:`FencedProducer.send` into bytes
            (:data:`~lockkit.guards.JSON` by default; :data:`~lockkit.guards.RAW` for
            bytes).
        **options: passed to ``aiokafka.AIOKafkaProducer`` (``security_protocol``,
            ``ssl_context``, ``sasl_*``, ``transaction_timeout_ms``, ``linger_ms``...);
            never shown in reprs. ``transactional_id``, ``enable_idempotence`` and
            ``acks`` are the guard's own.

    .. code-block:: python

        guard = KafkaGuard("localhost:9092")
        async with locks.lock("orders") as token:
            async with guard.producer(token) as producer:
                await producer.send("orders", {"id": 42}, key="order:42")

    .. versionadded:: 0.1
    """

    kind: ClassVar[str] = "kafka"

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        *,
        prefix: str = "lockkit.",
        codec: Codec[Any] = JSON,
        **options: Any,
    ) -> None:
        if isinstance(bootstrap_servers, str) and "://" in bootstrap_servers:
            url = parse_url(bootstrap_servers)
            if url.scheme != "kafka":
                raise ConfigurationError(f"a Kafka URL starts with kafka://, not {url.scheme}://")
            if url.username is not None or url.password is not None:
                raise ConfigurationError(
                    "pass Kafka credentials as producer options (sasl_plain_username=..., "
                    "sasl_plain_password=...), not in the URL"
                )
            servers: list[str] = url.host_strings(_DEFAULT_PORT)
        elif isinstance(bootstrap_servers, str):
            servers = [s.strip() for s in bootstrap_servers.split(",") if s.strip()]
        else:
            servers = [str(s) for s in bootstrap_servers]
        if not servers:
            raise ConfigurationError("KafkaGuard needs at least one bootstrap server")
        reserved = _RESERVED_OPTIONS & options.keys()
        if reserved:
            raise ConfigurationError(
                f"KafkaGuard sets {', '.join(sorted(reserved))} itself; do not pass them"
            )
        self.bootstrap_servers: Final = servers
        self.prefix: Final = prefix
        self.codec: Final = codec
        self._options = dict(options)
        self._abort_timeout = float(options.get("request_timeout_ms", 40_000)) / 1000
        self._live: set[FencedProducer] = set()

    def transactional_id(self, lock: str) -> str:
        """The ``transactional_id`` of the producers of ``lock``."""
        return f"{self.prefix}{lock}"

    def producer(self, token: FencingToken) -> FencedProducer:
        """A producer for the holder of ``token`` (use it with ``async with``). Starting
        it fences every producer of an earlier holder of the same lock.

        Raises:
            TypeError: ``token`` is not a :class:`~lockkit.FencingToken`.
            StaleTokenError: (on start) this process already used a newer token for
                the lock.
        """
        return FencedProducer(self, token)

    async def aclose(self) -> None:
        """Close the producers of this guard that are still open. Idempotent."""
        for producer in list(self._live):
            await producer.aclose()

    async def __aenter__(self) -> KafkaGuard:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<KafkaGuard {','.join(self.bootstrap_servers)} prefix={self.prefix!r}>"
