"""How Redis driver errors become lockkit errors: one table for :func:`map_errors`."""

from __future__ import annotations

from collections.abc import Sequence

import redis.exceptions as redis_errors

from ..._core._errors import (
    BackendUnavailable,
    ConfigurationError,
    ErrorRule,
    LockError,
    translate,
)
from .resp import AuthError, RespError

__all__ = ("DRIVER_ERRORS", "REDIS_ERRORS", "driver_error", "is_refused")

#: Error replies that mean the credentials were refused.
_REFUSED = ("NOAUTH", "WRONGPASS")


def is_refused(exc: BaseException) -> bool:
    """True if ``exc`` says the server refused our credentials."""
    return isinstance(
        exc,
        AuthError
        | redis_errors.AuthenticationError
        | redis_errors.AuthenticationWrongNumberOfArgsError,
    ) or (isinstance(exc, RespError | redis_errors.ResponseError) and str(exc).startswith(_REFUSED))


def _refused(exc: BaseException, what: str) -> LockError:
    return ConfigurationError(
        f"Redis refused the credentials while trying to {what}; check the username and password"
    )


def _answered(exc: BaseException, what: str) -> LockError:
    if is_refused(exc):
        return _refused(exc, what)
    return BackendUnavailable(f"Redis answered an error while trying to {what}: {exc}")


def _unavailable(exc: BaseException, what: str) -> LockError:
    return BackendUnavailable(f"Redis is unavailable; could not {what}: {exc}")


#: First matching row wins.
REDIS_ERRORS: Sequence[ErrorRule] = (
    (
        (
            AuthError,
            redis_errors.AuthenticationError,
            redis_errors.AuthenticationWrongNumberOfArgsError,
        ),
        _refused,
    ),
    ((RespError, redis_errors.ResponseError), _answered),
    ((redis_errors.RedisError, OSError, TimeoutError), _unavailable),
)

#: Every exception type the table translates.
DRIVER_ERRORS: tuple[type[BaseException], ...] = tuple(
    t for types, _ in REDIS_ERRORS for t in (types if isinstance(types, tuple) else (types,))
)


def driver_error(exc: BaseException, what: str) -> LockError:
    """The lockkit error for ``exc`` (one of :data:`DRIVER_ERRORS`), by the table; for
    hot paths that catch ``DRIVER_ERRORS`` themselves instead of using map_errors."""
    return translate(REDIS_ERRORS, exc, what) or _unavailable(exc, what)
