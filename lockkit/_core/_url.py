"""Backend URLs: parsed once into a frozen value whose repr never shows a password."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import final
from urllib.parse import parse_qsl, quote, unquote

from ._errors import ConfigurationError

__all__ = ("LockURL", "parse_url")


@final
@dataclasses.dataclass(frozen=True, slots=True)
class LockURL:
    """A parsed backend URL.

    ``scheme://[user[:password]@]host[:port][,host[:port]...][/path][?key=value&...]``.
    Several hosts are separated by commas (Redlock masters, Sentinels, ZooKeeper and
    etcd members). ``str()`` and ``repr()`` show the password as ``***``; the real value
    is only in :attr:`password`.

    .. versionadded:: 0.1
    """

    scheme: str
    hosts: tuple[tuple[str, int | None], ...] = ()
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    path: str = ""
    query: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def host_strings(self, default_port: int | None = None) -> list[str]:
        """``host:port`` for each host, filling in ``default_port`` where none was given."""
        out = []
        for host, port in self.hosts:
            shown = f"[{host}]" if ":" in host else host
            p = port if port is not None else default_port
            out.append(shown if p is None else f"{shown}:{p}")
        return out

    def __str__(self) -> str:
        auth = ""
        if self.username is not None or self.password is not None:
            auth = quote(self.username or "", safe="")
            if self.password is not None:
                auth += ":***"
            auth += "@"
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in self.query.items())
        return f"{self.scheme}://{auth}{','.join(self.host_strings())}{self.path}" + (
            f"?{query}" if query else ""
        )

    def __repr__(self) -> str:
        return f"LockURL({str(self)!r})"


def parse_url(url: str) -> LockURL:
    """Parse ``url``; raise :class:`ConfigurationError` saying what is wrong with it."""
    if not isinstance(url, str):
        raise ConfigurationError(f"a backend URL must be a str, not {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise ConfigurationError(
            "a backend URL looks like 'memory://' or 'redis://localhost:6379/0'; "
            "this one has no scheme"
        )
    scheme = scheme.lower()
    rest, _, _fragment = rest.partition("#")
    rest, _, query_string = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    path = slash + path if slash else ""
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) if user else None
        password = unquote(pw) if colon else None
    hosts = tuple(_parse_host(h, scheme) for h in netloc.split(",") if h) if netloc else ()
    try:
        query = dict(parse_qsl(query_string, keep_blank_values=True, strict_parsing=False))
    except ValueError as exc:  # pragma: no cover - parse_qsl is lenient
        raise ConfigurationError(f"cannot parse the query string of a {scheme}:// URL") from exc
    return LockURL(scheme, hosts, username, password, unquote(path), query)


def _parse_host(text: str, scheme: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, _, after = text[1:].partition("]")
        port_text = after[1:] if after.startswith(":") else ""
        if after and not after.startswith(":"):
            raise ConfigurationError(f"malformed IPv6 host {text!r} in a {scheme}:// URL")
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ConfigurationError(f"empty host name in a {scheme}:// URL")
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(
            f"port {port_text!r} of host {host!r} in a {scheme}:// URL is not a number in 1..65535"
        )
    return host, int(port_text)
