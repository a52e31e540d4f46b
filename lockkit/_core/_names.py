"""Validation shared by every backend: names, ttl and timeout values."""

from __future__ import annotations

import math
import re

from ._errors import ConfigurationError, InvalidLockName

__all__ = ("MAX_NAME_BYTES", "validate_name", "validate_timeout", "validate_ttl")

#: Longest accepted name, in UTF-8 bytes. Every backend can store a key of this size
#: plus its own prefix; ZooKeeper and etcd paths stay far below their limits.
MAX_NAME_BYTES = 1024

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def validate_name(name: object, what: str = "lock") -> str:
    """Return ``name`` if it is usable as a lock or resource name, else raise.

    Raises:
        InvalidLockName: empty, longer than :data:`MAX_NAME_BYTES` UTF-8 bytes, not a
            string, or containing control characters.
    """
    if not isinstance(name, str):
        raise InvalidLockName(repr(name), f"a {what} name must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidLockName(name, f"a {what} name cannot be empty")
    if (size := len(name.encode("utf-8", "surrogatepass"))) > MAX_NAME_BYTES:
        raise InvalidLockName(
            name,
            f"{size} bytes in UTF-8; shorten it to at most {MAX_NAME_BYTES} (hash it if needed)",
        )
    if (bad := _CONTROL.search(name)) is not None:
        raise InvalidLockName(
            name, f"control character {bad.group()!r} at position {bad.start()}; remove it"
        )
    return name


def validate_ttl(ttl: object, what: str = "ttl") -> float:
    """Return ``ttl`` as a float if it is a positive, finite number of seconds."""
    value = _number(ttl, what)
    if not value > 0 or math.isinf(value):
        raise ConfigurationError(
            f"{what} must be a positive, finite number of seconds, got {ttl!r}"
        )
    if value < 0.01:
        raise ConfigurationError(f"{what} must be at least 0.01 seconds, got {ttl!r}")
    return value


def validate_timeout(timeout: object) -> float | None:
    """Return ``timeout`` as ``None`` (wait forever) or a float >= 0."""
    if timeout is None:
        return None
    value = _number(timeout, "timeout")
    if not value >= 0:
        raise ConfigurationError(
            f"timeout must be None (wait forever), 0 (try once) or a positive number of "
            f"seconds, got {timeout!r}"
        )
    return None if math.isinf(value) else value


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            f"{what} must be a number of seconds, not {type(value).__name__} ({value!r})"
        )
    result = float(value)
    if math.isnan(result):
        raise ConfigurationError(f"{what} cannot be NaN")
    return result
