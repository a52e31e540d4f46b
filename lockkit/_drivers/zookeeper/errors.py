"""ZooKeeper's errors as lockkit errors, and the server answers lockkit reads as replies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from aiozk import exc as zk_errors

from ..._core._errors import (
    BackendUnavailable,
    ConfigurationError,
    ErrorRule,
    LockError,
    translate,
)

__all__ = (
    "ANSWERS",
    "ZK_ERRORS",
    "NoNode",
    "NodeExists",
    "ResponseError",
    "driver_error",
)


def _refused(exc: BaseException, what: str) -> LockError:
    return ConfigurationError(
        f"ZooKeeper refused access while trying to {what} ({type(exc).__name__}); check "
        "the credentials and the ACLs of the lock nodes"
    )


def _unavailable(exc: BaseException, what: str) -> LockError:
    detail = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
    return BackendUnavailable(f"ZooKeeper is unavailable; could not {what} ({detail})")


def _answered(exc: BaseException, what: str) -> LockError:
    return BackendUnavailable(
        f"ZooKeeper answered an error while trying to {what}: {type(exc).__name__}"
    )


#: First matching row wins.
ZK_ERRORS: Sequence[ErrorRule] = (
    ((zk_errors.NoAuth, zk_errors.AuthFailed, zk_errors.InvalidACL), _refused),
    (
        (
            zk_errors.ConnectError,
            zk_errors.SessionLost,
            zk_errors.ConnectionLoss,
            zk_errors.SessionExpired,
            zk_errors.SessionMoved,
            zk_errors.OperationTimeout,
            zk_errors.TimeoutError,
            zk_errors.UnfinishedRead,
            OSError,
            TimeoutError,
        ),
        _unavailable,
    ),
    (zk_errors.ZKError, _answered),
)


def driver_error(exc: BaseException, what: str) -> LockError:
    return translate(ZK_ERRORS, exc, what) or _unavailable(exc, what)


NoNode = zk_errors.NoNode
NodeExists = zk_errors.NodeExists
ResponseError = zk_errors.ResponseError

#: Replies that answer the question (returned by Link.call, not raised).
ANSWERS: Final = (zk_errors.NoNode, zk_errors.NodeExists, zk_errors.NotEmpty)
