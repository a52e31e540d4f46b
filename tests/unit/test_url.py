from __future__ import annotations

import pytest

import lockkit
from lockkit import ConfigurationError, parse_url


def test_multi_host_url_with_credentials_is_redacted() -> None:
    url = parse_url("redlock://app:s3cr%40t@h1:6379,h2,[::1]:6380/0?fair=false")
    assert url.scheme == "redlock"
    assert url.hosts == (("h1", 6379), ("h2", None), ("::1", 6380))
    assert url.username == "app" and url.password == "s3cr@t"
    assert url.path == "/0" and url.query == {"fair": "false"}
    for shown in (str(url), repr(url)):
        assert "s3cr" not in shown and "***" in shown
    assert url.host_strings(6379) == ["h1:6379", "h2:6379", "[::1]:6380"]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("localhost:6379", "no scheme"),
        ("redis://h:notaport", "not a number"),
        ("redis://h:70000", "not a number"),
        ("redis://:1", "empty host"),
    ],
)
def test_bad_urls_say_what_is_wrong(bad: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        parse_url(bad)


def test_unknown_scheme_lists_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown URL scheme 'nope://'.*memory://"):
        lockkit.connect("nope://x")


def test_unknown_option_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown option 'colour'.*memory"):
        lockkit.connect("memory://", colour="blue")
    with pytest.raises(ConfigurationError, match="unknown option 'x'"):
        lockkit.connect("memory://?x=1")


def test_client_repr_names_backend() -> None:
    client = lockkit.connect("memory://store")
    assert "MemoryBackend" in repr(client) and "new" in repr(client)


def test_bad_client_options() -> None:
    with pytest.raises(ConfigurationError, match="drift_factor"):
        lockkit.connect("memory://", drift_factor=0.9)
    with pytest.raises(ConfigurationError, match="default_ttl"):
        lockkit.connect("memory://", default_ttl=0)
