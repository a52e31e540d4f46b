"""The shape of an aiozk client (aiozk has no type hints), the option records, and the
client made from a URL."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any, Final, Protocol, final

import aiozk

from ..._core._errors import ConfigurationError
from ..._core._options import as_seconds, as_text, option
from ..._core._url import LockURL

__all__ = (
    "DEFAULT_PORT",
    "ConnectionP",
    "SessionP",
    "StateMachineP",
    "ZKClientP",
    "ZooKeeperLockOptions",
    "ZooKeeperOptions",
    "client_from_url",
    "digest_credentials",
)

DEFAULT_PORT: Final = 2181


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


def digest_credentials(url: LockURL) -> bytes | None:
    """``user:password`` of ``url`` for digest auth, or None when it has no credentials."""
    if url.username is None and url.password is None:
        return None
    if not url.username or url.password is None:
        raise ConfigurationError(
            "ZooKeeper digest credentials are 'user:password@' with both parts"
        )
    return f"{url.username}:{url.password}".encode()
