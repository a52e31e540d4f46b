"""What lockkit's errors become in an HTTP response, for every web integration.

One table maps each error a request handler can meet to a status, a short
``application/problem+json`` body (RFC 9457) and, where waiting helps, a
``Retry-After``. The bodies are fixed sentences: nothing from the exception (lock
names, hosts, server messages) reaches the client. The full error goes to the
``lockkit.integrations`` logger instead.

The choices:

- ``LockTimeout`` is **423 Locked**: the resource is held by another request and will
  be free again, so the client should wait ``Retry-After`` and repeat the same request.
  409 stays for the refusals below, after which repeating the same request blindly is
  wrong (the data moved on), so a client can tell the two apart by status alone.
- ``StaleTokenError`` and ``WriteConflictError`` are **409 Conflict**: a guard refused
  the write because a newer holder wrote, or the value changed since it was read.
- ``BackendUnavailable`` is **503** with ``Retry-After``: the lock service is down.
- ``LockLostError`` and ``LockNotOwnedError`` are **503** with ``Retry-After``: the
  request lost its lease while working, so it cannot vouch for having been alone.
- ``InvalidLockName`` is **400**: the name came from the request's path and cannot be a
  lock name (too long, control characters).

``ConfigurationError`` and ``LockUsageError`` are bugs in the service, not in the
request, and are left to the framework's own 500 handling (and its traceback).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import string
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

import anyio

from .._core._client import LockClient
from .._core._errors import (
    BackendUnavailable,
    InvalidLockName,
    LockError,
    LockLostError,
    LockNotOwnedError,
    LockTimeout,
    LockUsageError,
    StaleTokenError,
    WriteConflictError,
)

__all__ = (
    "MAPPED",
    "PROBLEM_JSON",
    "Problem",
    "RetryAfter",
    "lock_name",
    "problem_for",
    "readiness_check",
    "template_fields",
)

logger = logging.getLogger("lockkit.integrations")

PROBLEM_JSON: Final = "application/problem+json"

#: Seconds to put in ``Retry-After`` per error class, overriding the table's.
RetryAfter = Mapping[type[LockError], int]


@dataclasses.dataclass(frozen=True, slots=True)
class _Rule:
    status: HTTPStatus
    code: str
    detail: str
    retry_after: int | None = None


#: Error class -> what the client gets. Every class here is a direct child of LockError,
#: so the order does not matter.
_RULES: Final[dict[type[LockError], _Rule]] = {
    LockTimeout: _Rule(
        HTTPStatus.LOCKED,
        "lock_timeout",
        "Another request is working on this resource; try again shortly.",
        retry_after=1,
    ),
    StaleTokenError: _Rule(
        HTTPStatus.CONFLICT,
        "stale_token",
        "A newer holder of the lock has written this resource; the write was refused.",
    ),
    WriteConflictError: _Rule(
        HTTPStatus.CONFLICT,
        "write_conflict",
        "The resource changed while this request was working on it; the write was refused.",
    ),
    BackendUnavailable: _Rule(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "lock_service_unavailable",
        "The lock service cannot be reached.",
        retry_after=5,
    ),
    LockLostError: _Rule(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "lock_lost",
        "The request lost its lock before it finished; its outcome is uncertain.",
        retry_after=1,
    ),
    LockNotOwnedError: _Rule(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "lock_lost",
        "The request lost its lock before it finished; its outcome is uncertain.",
        retry_after=1,
    ),
    InvalidLockName: _Rule(
        HTTPStatus.BAD_REQUEST,
        "invalid_lock_name",
        "The request names a resource that cannot be locked (too long, or control characters).",
    ),
}

#: The error classes the integrations turn into responses.
MAPPED: Final = tuple(_RULES)


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """An error response: status, extra headers (``Retry-After``) and the body, sent as
    ``application/problem+json``."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]

    def content(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


def _problem(rule: _Rule, retry_after: int | None) -> Problem:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": rule.status.phrase,
        "status": int(rule.status),
        "detail": rule.detail,
        "code": rule.code,
    }
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Problem(int(rule.status), body, headers)


def problem_for(error: LockError, retry_after: RetryAfter | None = None) -> Problem | None:
    """The response for ``error``, or ``None`` for an error the table leaves to the
    framework (a bug in the service). Logs the error for the operator."""
    rule = next((r for kind, r in _RULES.items() if isinstance(error, kind)), None)
    if rule is None:
        return None
    seconds = rule.retry_after
    if retry_after is not None:
        seconds = next((s for k, s in retry_after.items() if isinstance(error, k)), seconds)
    level = logging.WARNING if rule.status >= 500 else logging.INFO
    logger.log(level, "%s answered %d: %s", type(error).__name__, rule.status, error)
    return _problem(rule, seconds)


async def readiness_check(client: LockClient | None, timeout: float) -> Problem | float:
    """Ping the lock service within ``timeout`` seconds: the latency, or the 503 to send."""
    rule = _RULES[BackendUnavailable]
    if client is None:
        return _problem(rule, rule.retry_after)
    try:
        with anyio.fail_after(timeout):
            return await client.ping()
    except (TimeoutError, BackendUnavailable, LockUsageError) as exc:
        logger.warning("readiness: the lock service did not answer: %r", exc)
        return _problem(rule, rule.retry_after)


def template_fields(template: str) -> tuple[str, ...]:
    """The names a lock name template such as ``"orders:{order_id}"`` uses. Only plain
    ``{name}`` fields are allowed (no attribute, index, conversion or format spec).

    Raises:
        ValueError: a field is not a plain name, or the template has none.
    """
    fields: list[str] = []
    for _literal, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise ValueError(
                f"lock name template {template!r}: use plain {{name}} fields, got {{{field}}}"
            )
        fields.append(field)
    return tuple(fields)


def lock_name(template: str, params: Mapping[str, Any]) -> str:
    """``template`` with its fields replaced by the request's path parameters.

    Raises:
        LockUsageError: the route has no path parameter of a field's name.
    """
    missing = [field for field in template_fields(template) if field not in params]
    if missing:
        raise LockUsageError(
            f"lock name template {template!r} uses {missing}, which this route's path "
            f"does not define (it has {sorted(params)})"
        )
    return template.format_map({key: str(value) for key, value in params.items()})
