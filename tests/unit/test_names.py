from __future__ import annotations

import math

import pytest

from lockkit import ConfigurationError, InvalidLockName
from lockkit._core._names import MAX_NAME_BYTES, validate_name, validate_timeout, validate_ttl


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("", "empty"),
        ("a\x00", "control character"),
        ("tab\there", "control character"),
        ("é" * (MAX_NAME_BYTES // 2 + 1), "bytes in UTF-8"),
        (42, "must be a str"),
    ],
)
def test_bad_names(name: object, match: str) -> None:
    with pytest.raises(InvalidLockName, match=match):
        validate_name(name)


def test_good_names() -> None:
    for name in ("a", "orders:42", "a/b/../c", "ключ", "x" * MAX_NAME_BYTES):
        assert validate_name(name) == name


def test_long_name_message_is_truncated() -> None:
    with pytest.raises(InvalidLockName) as info:
        validate_name("x" * 5000)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize("ttl", [0, -1, math.inf, math.nan, "30", None, True, 0.001])
def test_bad_ttl(ttl: object) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        validate_ttl(ttl)


def test_timeouts() -> None:
    assert validate_timeout(None) is None
    assert validate_timeout(0) == 0.0
    assert validate_timeout(math.inf) is None
    assert validate_timeout(2) == 2.0
    for bad in (-0.1, math.nan, "1"):
        with pytest.raises(ConfigurationError, match="timeout"):
            validate_timeout(bad)
