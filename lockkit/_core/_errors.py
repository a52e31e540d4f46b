"""The lockkit exception tree.

::

    LockError                 root: ``except lockkit.LockError`` catches all of lockkit
    ├── ConfigurationError    unknown scheme, bad option, missing extra (also a ValueError)
    ├── InvalidLockName       empty, too long, control characters (also a ValueError)
    ├── LockTimeout           not acquired within ``timeout`` (also a TimeoutError)
    ├── LockNotOwnedError     release or extend by a caller that does not hold the lock
    ├── LockLostError         lease expired or taken over while held
    ├── StaleTokenError       a guard refused a write
    ├── BackendUnavailable    connection or session failure (also a ConnectionError)
    └── LockUsageError        misuse: client not open, lock re-entered (also a RuntimeError)

Every error builds its message from its fields, so the fields are the contract and the
message is for people. ``retriable`` tells callers whether trying the same call again
can succeed without changing anything.

Backends translate driver exceptions with :func:`map_errors` and a table of their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from ._token import FencingToken

__all__ = (
    "BackendUnavailable",
    "ConfigurationError",
    "InvalidLockName",
    "LockError",
    "LockLostError",
    "LockNotOwnedError",
    "LockTimeout",
    "LockUsageError",
    "StaleTokenError",
    "WriteConflictError",
    "map_errors",
    "translate",
)


class LockError(Exception):
    """Root of every exception lockkit raises on purpose.

    .. versionadded:: 0.1
    """

    retriable: ClassVar[bool] = False


class ConfigurationError(LockError, ValueError):
    """Raised by :func:`lockkit.connect` and backend constructors for an unknown URL
    scheme, an unknown or malformed option, or a missing optional dependency (the
    message names the ``pip install lockkit[...]`` extra to add).

    .. versionadded:: 0.1
    """


class InvalidLockName(LockError, ValueError):
    """Raised before any I/O when a lock or resource name is empty, too long, or holds
    control characters.

    .. versionadded:: 0.1
    """

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        shown = name if len(name) <= 60 else name[:57] + "..."
        super().__init__(f"invalid lock name {shown!r}: {reason}")


class LockTimeout(LockError, TimeoutError):
    """Raised by ``acquire()`` (and ``async with``) when the lock was not obtained
    within ``timeout`` seconds. Nothing is left queued or held on the server.

    .. versionadded:: 0.1
    """

    retriable = True

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        super().__init__(f"lock {name!r} not acquired within {timeout:g}s")


class LockNotOwnedError(LockError):
    """Raised by ``release()`` or ``extend()`` when the caller does not hold the lock:
    it was never acquired, was already released, or its lease expired and the server
    no longer names this caller as the owner.

    .. versionadded:: 0.1
    """

    def __init__(self, name: str, detail: str = "this caller does not hold it") -> None:
        self.name = name
        self.detail = detail
        super().__init__(f"lock {name!r} is not owned: {detail}")


class LockLostError(LockError):
    """Raised when a held lock stops being held before its holder released it: the
    server reported another owner or no owner, or the local safe deadline passed with
    no confirmed renewal. Under the default policy the body of ``async with`` has been
    cancelled by the time this is raised. Any write made after the loss must carry the
    fencing token so that a guard can refuse it.

    .. versionadded:: 0.1
    """

    def __init__(self, name: str, reason: str, token: FencingToken | None = None) -> None:
        self.name = name
        self.reason = reason
        self.token = token
        at = f" (token {int(token)})" if token is not None else ""
        super().__init__(f"lock {name!r} was lost{at}: {reason}")


class StaleTokenError(LockError):
    """Raised by a guard that refused a mutation: ``offered`` is not newer than the
    ``current`` fence of ``resource`` (or is equal but from another acquisition, or
    was minted for another lock). Nothing was written.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        resource: str,
        offered: int,
        current: int | None,
        reason: str = "a newer token was already accepted",
    ) -> None:
        self.resource = resource
        self.offered = offered
        self.current = current
        self.reason = reason
        super().__init__(
            f"write to {resource!r} refused: token {int(offered)} is stale "
            f"(current {current if current is None else int(current)}; {reason})"
        )


class WriteConflictError(LockError):
    """Raised by a guard that refused a versioned write: the token was good, but the
    value changed since it was read (``expected`` is the version the caller read,
    ``current`` the version stored now; 0 means no value). Nothing was written; read
    again and recompute, as :meth:`lockkit.abc.Guard.update` does.

    .. versionadded:: 0.1
    """

    retriable = True

    def __init__(self, resource: str, expected: int, current: int) -> None:
        self.resource = resource
        self.expected = expected
        self.current = current
        super().__init__(
            f"write to {resource!r} refused: it was read at version {expected}, but it is "
            f"at version {current} now (another write came in between); read it again"
        )


class BackendUnavailable(LockError, ConnectionError):
    """Raised when the backend cannot be reached or its session failed. The driver's
    own exception is the ``__cause__``. Whether the operation took effect on the server
    is unknown; lockkit cleans up what it can on its side.

    .. versionadded:: 0.1
    """

    retriable = True


class LockUsageError(LockError, RuntimeError):
    """Raised when lockkit is used in a way that cannot work: a client used before it
    was opened or after it was closed, a client opened twice, or a task acquiring a
    lock it already holds or waits for (through any lock object of the same client),
    which would wait on itself. Fix the calling code; retrying cannot help.

    .. versionadded:: 0.1
    """


#: One row of an error table: the driver exception types, and a function that builds
#: the lockkit error from the exception and what was being attempted.
ErrorRule = tuple[
    type[BaseException] | tuple[type[BaseException], ...],
    Callable[[BaseException, str], LockError],
]


@contextlib.contextmanager
def map_errors(table: Sequence[ErrorRule], what: str) -> Iterator[None]:
    """Translate driver exceptions raised inside the block with ``table`` (first
    matching row wins), chaining the original as ``__cause__``. ``what`` completes
    the phrase "while trying to ..."; lockkit's own errors pass through."""
    try:
        yield
    except LockError:
        raise
    except Exception as exc:
        error = translate(table, exc, what)
        if error is None:
            raise
        raise error from exc


def translate(table: Sequence[ErrorRule], exc: BaseException, what: str) -> LockError | None:
    """The lockkit error ``table`` makes of ``exc`` (first matching row), or ``None``
    when no row matches. For hot paths that catch the table's types themselves."""
    for types, make in table:
        if isinstance(exc, types):
            return make(exc, what)
    return None
