"""What a Redis URL and keyword options configure: the option records (see
:mod:`lockkit._core._options`), the login of lockkit's connections, and the topology."""

from __future__ import annotations

import dataclasses
from typing import final

from ..._core._errors import ConfigurationError
from ..._core._options import TlsOptions, as_bool, as_count, as_seconds, as_text, option
from ..._core._url import LockURL
from .resp import ConnectOptions
from .topology import Cluster, Sentinel, Single, Topology

__all__ = ("RedisLockOptions", "RedisOptions", "connect_options", "topology_from_url")


def as_prefix(value: object) -> str:
    text = as_text(value)
    if any(c in text for c in "{}"):
        raise ValueError("the prefix cannot contain '{' or '}' (they mark Cluster hash tags)")
    return text


@dataclasses.dataclass(frozen=True, kw_only=True)
class RedisLockOptions:
    """Options of the lock algorithm; valid for URLs and for ``from_client``."""

    #: Prefix of every key and channel lockkit makes.
    prefix: str = option("lockkit:", as_prefix)
    #: Arrival order with direct handoff; False lets a free lock go to whoever asks.
    fair: bool = option(True, as_bool)
    #: Seconds a command may wait for its reply.
    timeout: float = option(5.0, as_seconds)
    #: After granting, wait until this many replicas have the grant (``WAIT``).
    wait_replicas: int = option(0, as_count)
    #: Seconds that wait may take.
    wait_timeout: float = option(1.0, as_seconds)
    #: Seconds the last-token key of a name is kept after its last grant. It costs one
    #: small key per name used in that time; after it expires, tokens still rise
    #: because each is at least the server's TIME in microseconds.
    fence_keep: float = option(3600.0, as_seconds)


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class RedisOptions(RedisLockOptions):
    """Options of a backend built from a URL: the lock options plus the connection's."""

    connect_timeout: float = option(5.0, as_seconds)
    #: Credentials of the Sentinels, when they differ from the servers'.
    sentinel_username: str | None = option(None, as_text)
    sentinel_password: str | None = option(None, as_text, secret=True)
    #: ``rediss://`` only.
    tls: TlsOptions = dataclasses.field(default_factory=TlsOptions)


def connect_options(
    options: RedisOptions, username: str | None, password: str | None, *, tls: bool
) -> ConnectOptions:
    """How lockkit's own connections log in; the TLS files are read here (errors are
    ConfigurationError)."""
    return ConnectOptions(
        username,
        password,
        options.tls if tls else None,
        options.tls.context() if tls else None,
        options.connect_timeout,
        options.timeout,
    )


def topology_from_url(url: LockURL, options: RedisOptions) -> Topology:
    """The topology a ``redis://``, ``rediss://``, ``redis+sentinel://`` or
    ``redis+cluster://`` URL names."""
    if not url.hosts:
        raise ConfigurationError(f"a {url.scheme}:// URL needs at least one host")
    if url.scheme in ("redis", "rediss"):
        if len(url.hosts) != 1:
            raise ConfigurationError(
                f"a {url.scheme}:// URL names one server; use redis+sentinel:// or "
                "redis+cluster:// for several"
            )
        host, port = url.hosts[0]
        return Single(host, port or 6379, _db(url.path))
    if url.scheme == "redis+sentinel":
        parts = [p for p in url.path.split("/") if p]
        if not parts:
            raise ConfigurationError(
                "a redis+sentinel:// URL ends with the service name: "
                "redis+sentinel://host:26379/mymaster[/db]"
            )
        return Sentinel(
            tuple((h, p or 26379) for h, p in url.hosts),
            parts[0],
            _db("/".join(parts[1:2])),
            options.sentinel_username,
            options.sentinel_password,
        )
    if url.scheme == "redis+cluster":
        return Cluster(tuple((h, p or 6379) for h, p in url.hosts))
    raise ConfigurationError(f"the redis backend does not serve {url.scheme}://")


def _db(path: str) -> int:
    text = path.strip("/")
    if not text:
        return 0
    if not text.isdigit():
        raise ConfigurationError(f"the database in a Redis URL is a number, got {text!r}")
    return int(text)
