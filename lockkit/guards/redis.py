"""A guard in Redis: the fence check and the write are one Lua script.

Each guarded resource is one hash, ``{prefix}{R'}`` where R' is the resource name with
``%``, ``{`` and ``}`` percent-encoded (the braces make it the Cluster hash tag), with
the fields ``value`` (the codec's bytes), ``version``, and the fence: ``token``,
``owner``, ``lock``, ``backend``. Fence, version and value share one key, so one script
on one node reads and changes them together, on a single server, behind Sentinel, or
on a Cluster. The hash never expires: deleting it forgets the fence.

Build it from a URL (``redis://``, ``rediss://``, ``redis+sentinel://``,
``redis+cluster://``, the same grammar and connection options as the Redis backend) or
around the application's own ``redis.asyncio.Redis`` / ``RedisCluster``, which lockkit
never closes.

The caller's own mutation runs under the same check, in the same script:
:meth:`RedisGuard.execute` takes a list of commands, :meth:`RedisGuard.script` a Lua
body. On a Cluster their keys must live in the resource's slot (put the resource's
hash tag, :meth:`RedisGuard.hash_tag`, in them); a key elsewhere is refused before
anything runs.

.. versionadded:: 0.1
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Final, Generic, TypeVar, final

import redis.exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot

from .._core._errors import ConfigurationError, LockUsageError, WriteConflictError
from .._core._names import validate_name
from .._core._options import parse_options
from .._core._token import FencingToken
from .._core._url import parse_url
from .._drivers.redis.errors import DRIVER_ERRORS, driver_error
from .._drivers.redis.options import (
    RedisLockOptions,
    RedisOptions,
    connect_options,
    topology_from_url,
)
from .._drivers.redis.resp import Arg, ConnectOptions, RespError, Script
from .._drivers.redis.scripts import encode_name, load, source
from .._drivers.redis.topology import AppClient, Executor, FastExecutor, Topology
from ..abc import Fence, Guard, GuardCapability, Versioned, check_fence
from ._codec import JSON, Codec

__all__ = ("GuardedCommandError", "GuardedScript", "RedisGuard")

ValueT = TypeVar("ValueT")

#: Prefix of the guard's keys unless told otherwise.
DEFAULT_PREFIX: Final = "lockkit:guard:"

WRITE = load("guard_write", prelude="guard_fence")
COMMANDS = load("guard_commands", prelude="guard_fence")
READ = load("guard_read")
KEYS = load("guard_keys")

#: The URL options a guard takes: where and how to connect, the prefix, the timeout.
_URL_OPTIONS = frozenset(
    {
        "prefix",
        "timeout",
        "connect_timeout",
        "sentinel_username",
        "sentinel_password",
        "ssl_ca_certs",
        "ssl_cert_reqs",
        "ssl_certfile",
        "ssl_keyfile",
    }
)

# reply tags of the scripts
_ACCEPTED, _STALE, _CONFLICT, _FAILED = 1, 0, 2, 3

Word = str | bytes | int | float
Command = Sequence[Word]


class GuardedCommandError(redis_errors.ResponseError):
    """A command given to :meth:`RedisGuard.execute` (or the body of a
    :class:`GuardedScript`) failed in Redis. The token had been accepted, so the fence
    was raised; what ran before the failure stays applied (Redis does not undo a script)
    and nothing after it ran.

    Attributes:
        index: the failed command's position in the list, from 0 (None for a Lua body).

    .. versionadded:: 0.1
    """

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index

    def __repr__(self) -> str:
        return f"GuardedCommandError({str(self)!r})"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    # an application client made with decode_responses=True hands back str
    return value if isinstance(value, bytes) else str(value).encode()


@final
class RedisGuard(Guard[ValueT], Generic[ValueT]):
    """Values in Redis, each fenced by the highest token that changed it, and versioned.

    Every change is one script that applies :func:`~lockkit.abc.check_fence`'s rule to
    the fence stored next to the value, and only if the token passes (and, for a
    versioned write, the version is the expected one) raises the fence and writes.
    Redis runs a script alone, so nothing can come in between.

    Build it with :meth:`from_url` or :meth:`from_client`; use it as an async context
    manager (entering sends one ``PING``) or call :meth:`aclose`.

    .. versionadded:: 0.1
    """

    kind: ClassVar[str] = "redis"
    capabilities: ClassVar[frozenset[GuardCapability]] = frozenset(
        {GuardCapability.READ, GuardCapability.CHECK, GuardCapability.VERSIONED}
    )

    def __init__(
        self,
        topology: Topology,
        *,
        prefix: str = DEFAULT_PREFIX,
        codec: Codec[ValueT] = JSON,
        connect: ConnectOptions = ConnectOptions(),  # noqa: B008 - frozen
    ) -> None:
        self.topology = topology
        self.prefix = prefix
        self.codec = codec
        self._connect = connect
        self._executor: Executor | None = None
        self._closed = False
        #: resource -> key, for names already checked
        self._keys_by_name: dict[str, str] = {}
        #: what COMMAND INFO said of each command name the caller used:
        #: (arity, first key, last key, step, keys move) or None if Redis does not know it
        self._commands: dict[str, tuple[int, int, int, int, bool] | None] = {}

    # -- construction ----------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, *, codec: Codec[Any] = JSON, **options: Any) -> RedisGuard[Any]:
        """A guard over its own connections to the Redis that ``url`` names.

        Args:
            url: ``redis://``, ``rediss://``, ``redis+sentinel://`` or
                ``redis+cluster://``, as for the Redis backend.
            codec: how values become bytes (:data:`~lockkit.guards.JSON`, ``TEXT``,
                ``RAW`` or your own).
            **options: ``prefix`` (default ``lockkit:guard:``), ``timeout``,
                ``connect_timeout``, ``sentinel_username``, ``sentinel_password`` and the
                ``ssl_*`` options, as keywords or in the query string (keywords win).
        """
        parsed = parse_url(url)
        if parsed.scheme not in ("redis", "rediss", "redis+sentinel", "redis+cluster"):
            raise ConfigurationError(f"the Redis guard does not serve {parsed.scheme}:// URLs")
        given = dict(options)
        if "prefix" not in given and "prefix" not in parsed.query:
            given["prefix"] = DEFAULT_PREFIX
        opts = parse_options(
            RedisOptions, "redis guard", parsed.query, given, allowed=set(_URL_OPTIONS)
        )
        topology = topology_from_url(parsed, opts)
        connect = connect_options(
            opts, parsed.username, parsed.password, tls=parsed.scheme == "rediss"
        )
        return cls(topology, prefix=opts.prefix, codec=codec, connect=connect)

    @classmethod
    def from_client(
        cls,
        client: Redis | RedisCluster,
        *,
        codec: Codec[Any] = JSON,
        prefix: str = DEFAULT_PREFIX,
    ) -> RedisGuard[Any]:
        """A guard over the application's ``redis.asyncio.Redis`` or ``RedisCluster``.

        lockkit never closes ``client``; timeouts and retries are the client's.
        """
        opts = parse_options(RedisLockOptions, "redis guard", {}, {"prefix": prefix})
        return cls(AppClient(client), prefix=opts.prefix, codec=codec)

    # -- keys ------------------------------------------------------------------------

    def key(self, resource: str) -> str:
        """The Redis key (a hash) that holds ``resource``."""
        key = self._keys_by_name.get(resource) if type(resource) is str else None
        if key is None:
            if len(self._keys_by_name) >= 4096:
                self._keys_by_name.clear()
            key = self._keys_by_name[resource] = f"{self.prefix}{self.hash_tag(resource)}"
        return key

    @staticmethod
    def hash_tag(resource: str) -> str:
        """``{resource}`` as it appears in the resource's key: put it in the keys of
        commands run under the resource's fence on a Cluster, so that they share its
        slot. For a name without ``%``, ``{`` or ``}`` it is ``{`` + the name + ``}``,
        and a key named exactly like the resource is in the same slot too."""
        return f"{{{encode_name(validate_name(resource, 'resource'))}}}"

    # -- plumbing --------------------------------------------------------------------

    def _open(self) -> Executor:
        if self._closed:
            raise LockUsageError("the Redis guard is closed")
        executor = self._executor
        if executor is None:
            executor = self._executor = self.topology.open(self._connect)
        return executor

    async def _run(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        executor = self._open()
        try:
            return await executor.evalsha(script, keys, args)
        except DRIVER_ERRORS as exc:
            if isinstance(executor, FastExecutor) and str(exc).startswith("READONLY"):
                # a demoted primary: the next call asks the Sentinels again
                executor.conn.drop("the server is a replica now")
            raise driver_error(exc, f"run the guard's {script.name} script") from exc

    def _prepare(self, resource: str, token: FencingToken) -> tuple[str, list[Arg]]:
        """The resource's key and the token's words, after the input checks."""
        key = self.key(resource)  # checks the name first
        given: object = token  # a caller may pass anything
        if not isinstance(given, FencingToken):
            check_fence(resource, None, token)  # raises the TypeError every guard raises
        return key, [str(int(token)), token.owner, token.name, token.backend]

    def _settle(self, resource: str, token: FencingToken, reply: Any, expected: int | None) -> Any:
        """The accepted reply's payload; a refusal raised as check_fence raises it."""
        tag = int(reply[0])
        if tag == _ACCEPTED:
            return reply[1] if len(reply) > 1 else None
        if tag == _STALE:
            fence = Fence(
                resource, int(reply[1]), _text(reply[2]), _text(reply[3]), _text(reply[4])
            )
            check_fence(resource, fence, token)  # raises StaleTokenError with its reason
            raise RuntimeError(  # pragma: no cover - the Lua and Python rules disagree
                f"the guard script refused token {int(token)} for {resource!r}, which "
                f"check_fence accepts against {fence}"
            )
        if tag == _CONFLICT:
            raise WriteConflictError(resource, -1 if expected is None else expected, int(reply[1]))
        if tag == _FAILED:
            index = int(reply[1]) - 1
            where = "the Lua body" if index < 0 else f"command {index}"
            raise GuardedCommandError(
                f"{where} under the fence of {resource!r} failed: {_text(reply[2])} (the "
                "token was accepted and the fence raised; what ran before stays)",
                None if index < 0 else index,
            )
        raise RuntimeError(f"unexpected reply from the guard script: {reply!r}")  # pragma: no cover

    def _check_slot(self, resource: str, key: str, keys: Iterable[Word], where: str) -> None:
        """On a Cluster, refuse a key outside the resource's slot, before anything runs."""
        if self.topology.group_of(key) is None:
            return
        slot = key_slot(key.encode())
        for other in keys:
            data = other if isinstance(other, bytes) else str(other).encode()
            if key_slot(data) != slot:
                raise ConfigurationError(
                    f"{where} touches key {_text(other)!r} in Cluster slot {key_slot(data)}, "
                    f"but resource {resource!r} lives in slot {slot} (key {key!r}): one "
                    "script reaches one slot; put the hash tag "
                    f"{self.hash_tag(resource)} in the key"
                )

    # -- the contract ----------------------------------------------------------------

    async def write(
        self,
        resource: str,
        value: ValueT,
        *,
        token: FencingToken,
        expect_version: int | None = None,
    ) -> None:
        key, words = self._prepare(resource, token)
        data = self.codec.encode(value)
        if expect_version is None:
            words.append(b"")
        else:
            if isinstance(expect_version, bool) or not isinstance(expect_version, int):
                raise TypeError(f"expect_version is an int, not {type(expect_version).__name__}")
            if expect_version < 0:
                raise ValueError(f"expect_version cannot be negative, got {expect_version}")
            words.append(expect_version)
        words.append(data)
        reply = await self._run(WRITE, (key,), words)
        self._settle(resource, token, reply, expect_version)

    async def check(self, resource: str, *, token: FencingToken) -> None:
        key, words = self._prepare(resource, token)
        words.append(b"")
        self._settle(resource, token, await self._run(WRITE, (key,), words), None)

    async def _read(self, resource: str) -> list[Any]:
        reply: list[Any] = await self._run(READ, (self.key(resource),), ())
        return reply

    async def read(self, resource: str) -> ValueT | None:
        value = (await self._read(resource))[0]
        return None if value is None else self.codec.decode(_bytes(value))

    async def read_versioned(self, resource: str) -> Versioned[ValueT] | None:
        value, version, *_ = await self._read(resource)
        if value is None:
            return None
        return Versioned(self.codec.decode(_bytes(value)), int(version))

    async def fence(self, resource: str) -> Fence | None:
        _, _, token, owner, lock, backend = await self._read(resource)
        if token is None:
            return None
        return Fence(resource, int(token), _text(owner), _text(lock or ""), _text(backend or ""))

    # -- the caller's own mutation ---------------------------------------------------

    async def execute(
        self, resource: str, commands: Sequence[Command], *, token: FencingToken
    ) -> list[Any]:
        """Run ``commands`` (each a command as its words, e.g. ``("HSET", "order:42",
        "state", "paid")``) in one script that first checks ``token`` against the
        resource's fence and raises it. Returns each command's reply, as Redis sent it.

        The keys of each command are found from ``COMMAND INFO`` (asked once per command
        name and guard; commands whose keys move, like ``ZUNIONSTORE``, ask ``COMMAND
        GETKEYS`` on each call), declared to Redis, and on a Cluster checked to be in
        the resource's slot before anything runs.

        Raises:
            StaleTokenError: the token is stale; no command ran.
            ConfigurationError: an unknown command, a wrong number of words, or (on a
                Cluster) a key outside the resource's slot; nothing ran.
            GuardedCommandError: a command failed in Redis (see its docstring).
        """
        key, words = self._prepare(resource, token)
        checked = [self._words(command, i) for i, command in enumerate(commands)]
        keys = await self._keys(key, checked)
        self._check_slot(resource, key, keys, "a command")
        words.append(len(checked))
        for command in checked:
            words.append(len(command))
            words.extend(command)
        replies = self._settle(
            resource, token, await self._run(COMMANDS, (key, *keys), words), None
        )
        return list(replies)

    @staticmethod
    def _words(command: Command, index: int) -> list[Word]:
        if isinstance(command, str | bytes) or not command:
            raise TypeError(
                f"command {index} must be a non-empty sequence of words, like "
                f"('SET', 'key', 'value'), not {command!r}"
            )
        for word in command:
            if isinstance(word, bool) or not isinstance(word, str | bytes | int | float):
                raise TypeError(
                    f"command {index}: a word is str, bytes, int or float, not "
                    f"{type(word).__name__}"
                )
        return list(command)

    async def _keys(self, key: str, commands: list[list[Word]]) -> list[Word]:
        """The keys ``commands`` touch, in order, each once."""
        names = [_text(command[0]).lower() for command in commands]
        unknown = list(dict.fromkeys(n for n in names if n not in self._commands))
        if unknown:
            infos = await self._run(KEYS, (key,), ("info", *unknown))
            for name, info in zip(unknown, infos, strict=True):
                if not info:
                    self._commands[name] = None
                    continue
                arity, first, last, step, moving = (int(x) for x in info)
                self._commands[name] = (arity, first, last, step, bool(moving))
        found: dict[Word, None] = {}
        for i, (name, command) in enumerate(zip(names, commands, strict=True)):
            spec = self._commands[name]
            if spec is None:
                raise ConfigurationError(f"command {i}: Redis does not know {name.upper()!r}")
            arity, first, last, step, moving = spec
            if (arity >= 0 and len(command) != arity) or len(command) < -arity:
                raise ConfigurationError(
                    f"command {i}: wrong number of words for {name.upper()} "
                    f"({len(command)}, with the name)"
                )
            if moving:
                try:
                    keys = await self._run(KEYS, (key,), ("getkeys", *command))
                except Exception as exc:
                    raise ConfigurationError(f"command {i}: {exc}") from exc
            elif first <= 0:
                keys = []
            else:
                end = last if last >= 0 else len(command) + last
                keys = command[first : end + 1 : max(1, step)]
            found.update(dict.fromkeys(keys))
        return list(found)

    def script(self, body: str) -> GuardedScript:
        """A Lua body to run under the fence, made once and called many times::

            pay = guard.script("return redis.call('HSET', KEYS[1], 'state', ARGV[1])")
            await pay("order:42", keys=["order:42"], args=["paid"], token=token)

        Inside the body ``KEYS`` and ``ARGV`` are the caller's; it runs after the
        token was accepted and the fence raised, in the same script. Its return value
        is the call's.
        """
        return GuardedScript(self, body)

    async def _call(
        self,
        script: Script,
        resource: str,
        token: FencingToken,
        keys: Sequence[Word],
        args: Sequence[Word],
    ) -> Any:
        key, words = self._prepare(resource, token)
        self._check_slot(resource, key, keys, "the Lua body")
        try:
            reply = await self._run(script, (key, *keys), (*words, *args))
        except Exception as exc:
            cause = exc.__cause__
            if isinstance(cause, RespError | redis_errors.ResponseError) and (
                "compiling" in str(cause)
            ):
                raise GuardedCommandError(f"the Lua body does not compile: {cause}") from exc
            raise
        return self._settle(resource, token, reply, None)

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> RedisGuard[ValueT]:
        executor = self._open()
        try:
            await executor.execute("PING")
        except DRIVER_ERRORS as exc:
            raise driver_error(exc, "ping Redis") from exc
        return self

    async def aclose(self) -> None:
        """Close the guard's own connections (never the application's client)."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            await executor.aclose()

    def __repr__(self) -> str:
        return f"<RedisGuard {self.topology} prefix={self.prefix!r} codec={self.codec!r}>"


@final
class GuardedScript:
    """A caller's Lua body that runs under a :class:`RedisGuard`'s fence; made by
    :meth:`RedisGuard.script`.

    .. versionadded:: 0.1
    """

    __slots__ = ("_guard", "_script", "body")

    def __init__(self, guard: RedisGuard[Any], body: str) -> None:
        self._guard = guard
        self.body = body
        text = f"{source('guard_fence')}local function body(KEYS, ARGV)\n{body}\nend\n"
        self._script = Script("guard_body", text + source("guard_body"))

    async def __call__(
        self,
        resource: str,
        *,
        token: FencingToken,
        keys: Sequence[Word] = (),
        args: Sequence[Word] = (),
    ) -> Any:
        """Check ``token`` against the fence of ``resource``, raise it, and run the
        body with ``keys`` and ``args``; return what the body returned.

        Raises:
            StaleTokenError: the token is stale; the body did not run.
            ConfigurationError: on a Cluster, a key outside the resource's slot.
            GuardedCommandError: the body does not compile, or raised an error.
        """
        return await self._guard._call(self._script, resource, token, keys, args)

    def __repr__(self) -> str:
        return f"<GuardedScript sha={self._script.sha.decode()[:12]} of {self._guard!r}>"
