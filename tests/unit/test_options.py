"""Typed option records and their one parser."""

from __future__ import annotations

import dataclasses
import ssl

import pytest

import lockkit
from lockkit import ConfigurationError
from lockkit._core._options import (
    TlsOptions,
    as_bool,
    as_count,
    as_seconds,
    as_text,
    option,
    option_names,
    parse_options,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Example:
    fair: bool = option(True, as_bool)
    timeout: float = option(5.0, as_seconds)
    replicas: int = option(0, as_count)
    password: str | None = option(None, as_text, secret=True)
    tls: TlsOptions = dataclasses.field(default_factory=TlsOptions)


def test_defaults_query_and_keywords_keywords_win() -> None:
    assert parse_options(Example, "ex", {}, {}) == Example()
    opts = parse_options(Example, "ex", {"fair": "no", "timeout": "2"}, {"timeout": 0.5})
    assert opts.fair is False and opts.timeout == 0.5 and opts.replicas == 0


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_options(Example, "ex", {"fiar": "1"}, {})
    message = str(info.value)
    assert "'fiar'" in message and "fair" in message and "ssl_ca_certs" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("fair", "maybe"),
        ("timeout", "0"),
        ("timeout", "inf"),
        ("timeout", True),
        ("replicas", "-1"),
        ("replicas", 1.5),
        ("ssl_cert_reqs", "sometimes"),
        ("password", 42),
    ],
)
def test_bad_values_name_the_option(name: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=f"option '{name}' of the ex backend"):
        parse_options(Example, "ex", {}, {name: value})


def test_allowed_narrows_the_names() -> None:
    with pytest.raises(ConfigurationError, match="'timeout'"):
        parse_options(Example, "ex", {}, {"timeout": 1}, allowed={"fair"})


def test_nested_tls_options_and_secret_repr() -> None:
    opts = parse_options(Example, "ex", {"ssl_cert_reqs": "none"}, {"password": "hunter2"})
    assert opts.tls.ssl_cert_reqs == "none"
    assert "hunter2" not in repr(opts)
    assert option_names(Example) == [
        "fair",
        "timeout",
        "replicas",
        "password",
        "ssl_ca_certs",
        "ssl_cert_reqs",
        "ssl_certfile",
        "ssl_keyfile",
    ]


def test_tls_context() -> None:
    assert TlsOptions().context().verify_mode is ssl.CERT_REQUIRED
    relaxed = TlsOptions(ssl_cert_reqs="none").context()
    assert relaxed.verify_mode is ssl.CERT_NONE and not relaxed.check_hostname
    with pytest.raises(ConfigurationError, match="TLS files"):
        TlsOptions(ssl_ca_certs="/nonexistent/ca.pem").context()


def test_memory_backend_takes_no_options() -> None:
    with pytest.raises(ConfigurationError, match="known options: none"):
        lockkit.connect("memory://?fair=1")
