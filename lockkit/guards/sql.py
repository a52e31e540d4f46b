"""Guards in a SQL table: :class:`PostgresGuard` (asyncpg) and :class:`SqliteGuard`
(aiosqlite).

One table (``lockkit_guard`` unless ``table=`` says otherwise) holds one row per
resource: the value (the codec's bytes, ``NULL`` when only the fence was raised), its
version, and the fence (token, owner, lock name, backend). Every mutation is ONE
statement that applies :func:`~lockkit.abc.check_fence` in SQL::

    INSERT INTO lockkit_guard AS g (...) VALUES (...)
    ON CONFLICT (resource) DO UPDATE SET ...
    WHERE g.lock_name = :lock AND g.backend = :backend
      AND (g.token < :token OR (g.token = :token AND g.owner = :owner))
    RETURNING version

(a conditional ``UPDATE ... WHERE ... AND g.version = :expect`` for a versioned write of
an existing value). No row back means refused: the guard then reads the row and raises
the :class:`~lockkit.StaleTokenError` or :class:`~lockkit.WriteConflictError` that
``check_fence`` and the version comparison give for it. The row lock the statement
takes makes concurrent writers queue on the row, at any isolation level.

The table is created on first use (``CREATE TABLE IF NOT EXISTS``; PostgreSQL looks
for it first, so a role without the CREATE privilege works once it exists); pass
``create_table=False`` to never issue DDL, and call :meth:`create_table` (or run its
statement, :attr:`PostgresGuard.table_ddl`) from your migrations.

.. versionadded:: 0.1
"""

from __future__ import annotations

import abc
import dataclasses
import random
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, Self, TypeVar, final, overload

import anyio

from .._core._errors import (
    BackendUnavailable,
    ConfigurationError,
    ErrorRule,
    LockUsageError,
    StaleTokenError,
    WriteConflictError,
    map_errors,
)
from .._core._names import validate_name
from .._core._token import FencingToken
from .._core._url import parse_url
from ..abc import Fence, Guard, GuardCapability, Versioned, check_fence
from ._codec import JSON, Codec

if TYPE_CHECKING:
    import aiosqlite

__all__ = ("DEFAULT_TABLE", "PostgresGuard", "SqliteGuard")

ValueT = TypeVar("ValueT")

#: The table a guard uses unless ``table=`` names another.
DEFAULT_TABLE: Final = "lockkit_guard"
#: ``name`` or ``schema.name``, letters, digits and ``_``: quoted as given.
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?")
_PARAMETER = re.compile(r"(?<![:\w]):([a-z_]+)\b")
_BIGINT_MAX: Final = 2**63 - 1
#: A refused statement is explained by reading the row; if by then the row would accept
#: the write (a version the caller expected ahead of time arrived), the write is redone.
_EXPLAIN_ATTEMPTS: Final = 8

_ACCEPT = (
    "g.lock_name = :lock AND g.backend = :backend "
    "AND (g.token < :token OR (g.token = :token AND g.owner = :owner))"
)
_COLUMNS = "resource, value, version, token, owner, lock_name, backend"


@dataclasses.dataclass(frozen=True, slots=True)
class _Statements:
    """The guard's SQL, with ``:name`` parameters (rendered per driver)."""

    ddl: str
    #: Store a value whatever the version (``expect_version=None``).
    write: str
    #: Store a value only where there is none yet (``expect_version=0``).
    write_new: str
    #: Store a value over version ``:expect`` (``expect_version > 0``).
    write_over: str
    #: Raise the fence, keep the value and its version (``check``, ``fence_in``).
    check: str
    read: str

    @classmethod
    def for_table(cls, table: str, blob: str) -> _Statements:
        upsert = (
            f"INSERT INTO {table} AS g ({_COLUMNS}) "
            "VALUES (:resource, {value}, {version}, :token, :owner, :lock, :backend) "
            "ON CONFLICT (resource) DO UPDATE SET {set} WHERE {where} RETURNING version"
        )
        stored = "value = excluded.value, version = g.version + 1, "
        fenced = "token = excluded.token, owner = excluded.owner"
        return cls(
            ddl=(
                f"CREATE TABLE IF NOT EXISTS {table} ("
                "resource TEXT PRIMARY KEY, "
                f"value {blob}, "
                "version BIGINT NOT NULL, "
                "token BIGINT NOT NULL, "
                "owner TEXT NOT NULL, "
                "lock_name TEXT NOT NULL, "
                "backend TEXT NOT NULL)"
            ),
            write=upsert.format(value=":value", version="1", set=stored + fenced, where=_ACCEPT),
            write_new=upsert.format(
                value=":value",
                version="1",
                set=stored + fenced,
                where=f"{_ACCEPT} AND g.version = 0",
            ),
            write_over=(
                f"UPDATE {table} AS g SET value = :value, version = g.version + 1, "
                "token = :token, owner = :owner "
                f"WHERE g.resource = :resource AND {_ACCEPT} AND g.version = :expect "
                "RETURNING version"
            ),
            check=upsert.format(value="NULL", version="0", set=fenced, where=_ACCEPT),
            read=f"SELECT {_COLUMNS} FROM {table} WHERE resource = :resource",
        )


def _quoted_table(table: str) -> str:
    if not isinstance(table, str) or not _TABLE_NAME.fullmatch(table):
        raise ConfigurationError(
            f"table={table!r}: a guard's table is a name or schema.name of letters, digits "
            "and underscores (at most 63 each), not starting with a digit"
        )
    return ".".join(f'"{part}"' for part in table.split("."))


def _numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """``:name`` parameters as PostgreSQL's ``$1``, ``$2``... and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match[1]
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PARAMETER.sub(number, sql), tuple(names)


@dataclasses.dataclass(frozen=True, slots=True)
class _Row:
    resource: str
    value: bytes | None
    version: int
    token: int
    owner: str
    lock: str
    backend: str

    @classmethod
    def of(cls, row: Sequence[Any] | None) -> _Row | None:
        if row is None:
            return None
        resource, value, version, token, owner, lock, backend = row
        return cls(
            resource,
            None if value is None else bytes(value),
            int(version),
            int(token),
            owner,
            lock,
            backend,
        )

    @property
    def fence(self) -> Fence:
        return Fence(self.resource, self.token, self.owner, self.lock, self.backend)


def _refusal(
    resource: str, token: FencingToken, expect_version: int | None, row: _Row | None
) -> Exception | None:
    """Why the stored ``row`` refuses the write, as check_fence and the version say."""
    try:
        check_fence(resource, None if row is None else row.fence, token)
    except StaleTokenError as exc:
        return exc
    if expect_version is not None:
        current = 0 if row is None else row.version
        if current != expect_version:
            return WriteConflictError(resource, expect_version, current)
    return None


#: Runs one statement (by its key in :class:`_Statements`) with ``:name`` parameters
#: and returns its first row, or ``None``.
_Run = Callable[[str, Mapping[str, Any]], Awaitable[Sequence[Any] | None]]


class _SqlGuard(Guard[ValueT], Generic[ValueT]):
    """The algorithm both SQL guards share; a subclass says how to run a statement."""

    capabilities: ClassVar[frozenset[GuardCapability]] = frozenset(
        {GuardCapability.READ, GuardCapability.CHECK, GuardCapability.VERSIONED}
    )
    _blob: ClassVar[str]

    def __init__(self, *, table: str, codec: Codec[Any], create_table: bool) -> None:
        self.table = table
        self.codec = codec
        self._statements = _Statements.for_table(_quoted_table(table), self._blob)
        self._auto_create = create_table
        self._table_ready = False
        self._table_lock = anyio.Lock()
        self._closed = False

    async def __aenter__(self) -> Self:
        """Connect (a guard that opens its own connections), so that an unreachable
        database or refused credentials show here rather than at the first write."""
        if self._closed:
            raise LockUsageError(f"{type(self).__name__} entered after aclose()")
        await self._connect()
        return self

    async def _connect(self) -> None:
        """Open what the guard opens itself, if it has not yet."""

    @property
    def table_ddl(self) -> str:
        """The ``CREATE TABLE IF NOT EXISTS`` statement of the guard's table."""
        return self._statements.ddl

    # -- what a subclass provides -------------------------------------------------------

    @abc.abstractmethod
    async def _run(self, key: str, params: Mapping[str, Any]) -> Sequence[Any] | None:
        """Run statement ``key`` on the guard's own connection(s), autocommitted."""

    @abc.abstractmethod
    async def _create(self) -> None:
        """Create the table if it is missing, on the guard's own connection."""

    @abc.abstractmethod
    def _caller_runner(self, connection: Any) -> _Run:
        """How to run a statement in the caller's transaction on ``connection``."""

    # -- the table ----------------------------------------------------------------------

    async def create_table(self) -> None:
        """Create the guard's table if it does not exist. Idempotent."""
        async with self._table_lock:
            if not self._table_ready:
                await self._create()
                self._table_ready = True

    async def _ready(self) -> None:
        if self._closed:
            raise LockUsageError(f"{type(self).__name__} used after aclose()")
        if self._auto_create and not self._table_ready:
            await self.create_table()

    # -- the guard ----------------------------------------------------------------------

    @staticmethod
    def _validate(resource: str, token: FencingToken, expect_version: int | None) -> None:
        validate_name(resource, "resource")
        check_fence(resource, None, token)  # the TypeError for anything but a FencingToken
        if int(token) > _BIGINT_MAX:
            raise ValueError(f"token {int(token)} does not fit the guard's BIGINT column")
        if expect_version is not None and (
            isinstance(expect_version, bool)
            or not isinstance(expect_version, int)
            or expect_version < 0
        ):
            raise ValueError(f"expect_version must be an int >= 0, not {expect_version!r}")

    async def _apply(
        self,
        run: _Run,
        resource: str,
        token: FencingToken,
        *,
        value: bytes | None = None,
        store: bool,
        expect_version: int | None = None,
    ) -> None:
        params: dict[str, Any] = {
            "resource": resource,
            "token": int(token),
            "owner": token.owner,
            "lock": token.name,
            "backend": token.backend,
        }
        if not store:
            key = "check"
        elif expect_version is None:
            key, params["value"] = "write", value
        elif expect_version == 0:
            key, params["value"] = "write_new", value
        else:
            key, params["value"], params["expect"] = "write_over", value, expect_version
        for _ in range(_EXPLAIN_ATTEMPTS):
            if await run(key, params) is not None:
                return
            row = _Row.of(await run("read", {"resource": resource}))
            refusal = _refusal(resource, token, expect_version, row)
            if refusal is not None:
                raise refusal
        raise WriteConflictError(resource, expect_version or 0, -1)  # pragma: no cover

    async def write(
        self,
        resource: str,
        value: ValueT,
        *,
        token: FencingToken,
        expect_version: int | None = None,
    ) -> None:
        self._validate(resource, token, expect_version)
        data = self.codec.encode(value)
        await self._ready()
        await self._apply(
            self._run, resource, token, value=data, store=True, expect_version=expect_version
        )

    async def check(self, resource: str, *, token: FencingToken) -> None:
        self._validate(resource, token, None)
        await self._ready()
        await self._apply(self._run, resource, token, store=False)

    async def fence_in(self, connection: Any, resource: str, *, token: FencingToken) -> None:
        """Raise the fence of ``resource`` inside the caller's open transaction on
        ``connection``, so that the caller's own statements that follow commit or roll
        back together with it.

        The fence row stays locked until that transaction ends: a concurrent holder's
        ``fence_in`` on the same resource waits for it, then sees the new fence. A stale
        token raises :class:`~lockkit.StaleTokenError` here, before the caller's
        statements run; roll back (leaving ``async with connection.transaction()`` by
        the exception does). ``connection`` is the driver's connection (asyncpg for
        :class:`PostgresGuard`, aiosqlite for :class:`SqliteGuard`) or a SQLAlchemy
        ``AsyncConnection``/``AsyncSession`` on the same database. The table must exist
        (:meth:`create_table`): DDL is never run in the caller's transaction.

        Raises:
            StaleTokenError: the token is stale; the fence is unchanged.
            LockUsageError: ``connection`` is not in a transaction.
        """
        self._validate(resource, token, None)
        await self._ready()
        await self._apply(self._caller_runner(connection), resource, token, store=False)

    async def read(self, resource: str) -> ValueT | None:
        stored = await self.read_versioned(resource)
        return None if stored is None else stored.value

    async def read_versioned(self, resource: str) -> Versioned[ValueT] | None:
        row = await self._read(resource)
        if row is None or row.value is None:
            return None
        return Versioned(self.codec.decode(row.value), row.version)

    async def fence(self, resource: str) -> Fence | None:
        row = await self._read(resource)
        return None if row is None else row.fence

    async def _read(self, resource: str) -> _Row | None:
        validate_name(resource, "resource")
        await self._ready()
        return _Row.of(await self._run("read", {"resource": resource}))

    def _sqlalchemy_runner(self, connection: Any) -> _Run:
        from sqlalchemy import text

        statements = self._statements

        async def run(key: str, params: Mapping[str, Any]) -> Sequence[Any] | None:
            result = await connection.execute(text(getattr(statements, key)), dict(params))
            row = result.first()
            return None if row is None else tuple(row)

        return run


def _is_sqlalchemy(connection: object) -> bool:
    return type(connection).__module__.startswith("sqlalchemy.")


# --- PostgreSQL --------------------------------------------------------------------------


def _postgres_errors() -> Sequence[ErrorRule]:
    import asyncpg

    def refused(exc: BaseException, what: str) -> ConfigurationError:
        return ConfigurationError(f"PostgreSQL refused the credentials while trying to {what}")

    def unavailable(exc: BaseException, what: str) -> BackendUnavailable:
        return BackendUnavailable(f"PostgreSQL is unavailable; could not {what}: {exc}")

    return (
        (asyncpg.InvalidAuthorizationSpecificationError, refused),
        (
            (
                OSError,
                TimeoutError,
                asyncpg.PostgresConnectionError,
                asyncpg.CannotConnectNowError,
                asyncpg.TooManyConnectionsError,
                asyncpg.exceptions.ConnectionDoesNotExistError,
            ),
            unavailable,
        ),
    )


@final
class PostgresGuard(_SqlGuard[ValueT], Generic[ValueT]):
    """A guard over a PostgreSQL table, through asyncpg.

    ``source`` is a URL (``postgresql://user:password@host:5432/db``: the guard opens a
    pool on first use, with ``pool_options`` for :func:`asyncpg.create_pool`, and closes
    it in :meth:`aclose`), or an ``asyncpg.Pool`` or ``asyncpg.Connection`` of the
    application, which the guard uses and never closes (a single connection runs one
    statement at a time).

    The guard's own statements run autocommitted. A serialization failure or a deadlock
    the server reports for one of them (``default_transaction_isolation`` at
    ``serializable`` or ``repeatable read``) had no effect, and the statement is run
    again, up to ``serialization_retries`` times. In :meth:`fence_in` the statement
    runs in the caller's transaction, which such a failure aborts: the driver's
    ``asyncpg.SerializationError`` reaches the caller, whose retry loop runs the whole
    transaction again.

    .. versionadded:: 0.1
    """

    kind: ClassVar[str] = "postgres"
    _blob: ClassVar[str] = "BYTEA"

    @overload
    def __init__(
        self: PostgresGuard[Any],
        source: Any,
        *,
        table: str = ...,
        create_table: bool = ...,
        serialization_retries: int = ...,
        **pool_options: Any,
    ) -> None: ...
    @overload
    def __init__(
        self,
        source: Any,
        *,
        table: str = ...,
        codec: Codec[ValueT],
        create_table: bool = ...,
        serialization_retries: int = ...,
        **pool_options: Any,
    ) -> None: ...
    def __init__(
        self,
        source: Any,
        *,
        table: str = DEFAULT_TABLE,
        codec: Codec[Any] = JSON,
        create_table: bool = True,
        serialization_retries: int = 100,
        **pool_options: Any,
    ) -> None:
        import asyncpg

        super().__init__(table=table, codec=codec, create_table=create_table)
        self._url: str | None = None
        self._shown = ""
        self._pool: Any = None
        self._connection: Any = None
        self._own_pool = False
        self._pool_lock = anyio.Lock()
        self._connection_lock = anyio.Lock()
        self._pool_options = {"min_size": 1, "max_size": 10, **pool_options}
        self._retries = serialization_retries
        if isinstance(source, str):
            parsed = parse_url(source)
            if parsed.scheme not in ("postgresql", "postgres"):
                raise ConfigurationError(
                    f"PostgresGuard takes a postgresql:// URL, not {parsed.scheme}://"
                )
            self._url, self._shown, self._own_pool = source, str(parsed), True
        elif isinstance(source, asyncpg.Pool):
            self._pool, self._shown = source, "the application's pool"
        elif isinstance(source, asyncpg.Connection):
            self._connection, self._shown = source, "the application's connection"
        else:
            raise TypeError(
                "PostgresGuard takes a postgresql:// URL, an asyncpg.Pool or an "
                f"asyncpg.Connection, not {type(source).__name__}"
            )
        self._errors = _postgres_errors()
        self._retry_on = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)
        self._sql = {
            field.name: _numbered(getattr(self._statements, field.name))
            for field in dataclasses.fields(_Statements)
        }

    async def _connect(self) -> None:
        if self._connection is None:
            await self._acquire_pool()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresGuard[Any]:
        """``PostgresGuard(url, **options)``: the guard opens (and closes) its own pool."""
        return cls(url, **options)

    async def _acquire_pool(self) -> Any:
        if self._pool is None:
            import asyncpg

            async with self._pool_lock:
                if self._pool is None:
                    with map_errors(self._errors, f"connect to {self._shown}"):
                        self._pool = await asyncpg.create_pool(self._url, **self._pool_options)
        return self._pool

    async def _fetch(self, key: str, params: Mapping[str, Any]) -> Sequence[Any] | None:
        sql, names = self._sql[key]
        args = [params[name] for name in names]
        if self._connection is not None:
            async with self._connection_lock:
                return await self._connection.fetchrow(sql, *args)  # type: ignore[no-any-return]
        pool = await self._acquire_pool()
        return await pool.fetchrow(sql, *args)  # type: ignore[no-any-return]

    async def _run(self, key: str, params: Mapping[str, Any]) -> Sequence[Any] | None:
        for attempt in range(self._retries + 1):
            try:
                with map_errors(self._errors, f"run the guard's {key} on {self._shown}"):
                    return await self._fetch(key, params)
            except self._retry_on:
                in_transaction = (
                    self._connection is not None and self._connection.is_in_transaction()
                )
                if in_transaction or attempt == self._retries:
                    raise
            await anyio.sleep(random.uniform(0, min(0.05, 0.0005 * 2**attempt)))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _create(self) -> None:
        import asyncpg

        quoted = _quoted_table(self.table)
        with map_errors(self._errors, f"create the guard's table on {self._shown}"):
            if self._connection is not None:
                async with self._connection_lock:
                    exists = await self._connection.fetchval("SELECT to_regclass($1)", quoted)
                    if exists is None:
                        await self._connection.execute(self._statements.ddl)
                return
            pool = await self._acquire_pool()
            if await pool.fetchval("SELECT to_regclass($1)", quoted) is not None:
                return
            try:
                await pool.execute(self._statements.ddl)
            except (asyncpg.UniqueViolationError, asyncpg.DuplicateTableError):
                pass  # made by another guard at the same moment

    def _caller_runner(self, connection: Any) -> _Run:
        import asyncpg

        if _is_sqlalchemy(connection):
            return self._sqlalchemy_runner(connection)
        if not isinstance(connection, asyncpg.Connection | asyncpg.pool.PoolConnectionProxy):
            raise TypeError(
                "fence_in takes an asyncpg connection or a SQLAlchemy AsyncConnection, "
                f"not {type(connection).__name__}"
            )
        if not connection.is_in_transaction():
            raise LockUsageError(
                "fence_in raises the fence in your transaction: call it inside "
                "`async with connection.transaction():`, before your own statements"
            )
        sql = self._sql

        async def run(key: str, params: Mapping[str, Any]) -> Sequence[Any] | None:
            text, names = sql[key]
            return await connection.fetchrow(text, *[params[name] for name in names])  # type: ignore[no-any-return]

        return run

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._own_pool and self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def __repr__(self) -> str:
        return f"<PostgresGuard table={self.table!r} on {self._shown}>"


# --- SQLite ------------------------------------------------------------------------------


@final
class SqliteGuard(_SqlGuard[ValueT], Generic[ValueT]):
    """A guard over a table in an SQLite database file, through aiosqlite.

    The guard opens its own connection to ``path`` on first use (autocommit, waiting up
    to ``timeout`` seconds for another connection's write lock) and closes it in
    :meth:`aclose`. SQLite runs one write at a time per database, so each statement
    sees the latest fence. The journal mode is the database's own (WAL lets readers
    run beside a writer; the guard does not change it).

    .. versionadded:: 0.1
    """

    kind: ClassVar[str] = "sqlite"
    _blob: ClassVar[str] = "BLOB"

    @overload
    def __init__(
        self: SqliteGuard[Any],
        path: str | Path,
        *,
        table: str = ...,
        create_table: bool = ...,
        timeout: float = ...,
    ) -> None: ...
    @overload
    def __init__(
        self,
        path: str | Path,
        *,
        table: str = ...,
        codec: Codec[ValueT],
        create_table: bool = ...,
        timeout: float = ...,
    ) -> None: ...
    def __init__(
        self,
        path: str | Path,
        *,
        table: str = DEFAULT_TABLE,
        codec: Codec[Any] = JSON,
        create_table: bool = True,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(table=table, codec=codec, create_table=create_table)
        if not isinstance(path, str | Path):
            raise TypeError(f"SqliteGuard takes a file path, not {type(path).__name__}")
        self.path = path
        self._timeout = timeout
        self._db: aiosqlite.Connection | None = None
        self._open_lock = anyio.Lock()

    async def _connect(self) -> None:
        await self._connection()

    async def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            import aiosqlite

            async with self._open_lock:
                if self._db is None:
                    self._db = await aiosqlite.connect(
                        self.path, isolation_level=None, timeout=self._timeout
                    )
        return self._db

    async def _run(self, key: str, params: Mapping[str, Any]) -> Sequence[Any] | None:
        db = await self._connection()
        rows = await db.execute_fetchall(getattr(self._statements, key), dict(params))
        return next(iter(rows), None)

    async def _create(self) -> None:
        db = await self._connection()
        await db.execute(self._statements.ddl)

    def _caller_runner(self, connection: Any) -> _Run:
        import aiosqlite

        if _is_sqlalchemy(connection):
            return self._sqlalchemy_runner(connection)
        if not isinstance(connection, aiosqlite.Connection):
            raise TypeError(
                "fence_in takes an aiosqlite connection or a SQLAlchemy AsyncConnection, "
                f"not {type(connection).__name__}"
            )
        if connection.isolation_level is None and not connection.in_transaction:
            raise LockUsageError(
                "fence_in raises the fence in your transaction, and this autocommit "
                "connection has none open: run BEGIN IMMEDIATE first"
            )
        statements = self._statements

        async def run(key: str, params: Mapping[str, Any]) -> Sequence[Any] | None:
            rows = await connection.execute_fetchall(getattr(statements, key), dict(params))
            return next(iter(rows), None)

        return run

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    def __repr__(self) -> str:
        return f"<SqliteGuard table={self.table!r} on {str(self.path)!r}>"
