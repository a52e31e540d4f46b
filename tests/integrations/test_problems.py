"""The one error-to-HTTP table both integrations use."""

from __future__ import annotations

import pytest

import lockkit
from lockkit import FencingToken
from lockkit.integrations._problems import MAPPED, lock_name, problem_for

SECRET = "redis://user:hunter2@10.1.2.3:6379/0"


def every_error() -> list[lockkit.LockError]:
    token = FencingToken(5, name="orders:1", backend="redis", owner="o")
    return [
        lockkit.LockTimeout(SECRET, 5),
        lockkit.StaleTokenError(SECRET, 5, 7),
        lockkit.WriteConflictError(SECRET, 1, 2),
        lockkit.BackendUnavailable(SECRET),
        lockkit.LockLostError(SECRET, SECRET, token),
        lockkit.LockNotOwnedError(SECRET, SECRET),
        lockkit.InvalidLockName(SECRET, SECRET),
    ]


def test_every_error_a_request_can_meet_is_mapped_and_no_bug_is() -> None:
    # the error tree lockkit exports (guard modules add errors of their own for their own
    # operations, which an endpoint handles itself)
    exported = (getattr(lockkit, name) for name in lockkit.__all__)
    children = {c for c in exported if isinstance(c, type) and lockkit.LockError in c.__bases__}
    assert set(MAPPED) == children - {lockkit.ConfigurationError, lockkit.LockUsageError}
    assert problem_for(lockkit.LockUsageError("re-entered")) is None
    assert problem_for(lockkit.ConfigurationError(SECRET)) is None


def test_bodies_say_nothing_the_exception_carries() -> None:
    statuses = {}
    for error in every_error():
        problem = problem_for(error)
        assert problem is not None
        content = problem.content().decode()
        for part in ("hunter2", "10.1.2.3", "orders", "redis"):
            assert part not in content, (type(error).__name__, content)
        statuses[type(error).__name__] = (problem.status, problem.headers.get("Retry-After"))
    assert statuses == {
        "LockTimeout": (423, "1"),
        "StaleTokenError": (409, None),
        "WriteConflictError": (409, None),
        "BackendUnavailable": (503, "5"),
        "LockLostError": (503, "1"),
        "LockNotOwnedError": (503, "1"),
        "InvalidLockName": (400, None),
    }


def test_retry_after_can_be_changed_per_error_class() -> None:
    problem = problem_for(lockkit.LockTimeout("x", 1), {lockkit.LockTimeout: 7})
    assert problem is not None and problem.headers == {"Retry-After": "7"}
    problem = problem_for(lockkit.BackendUnavailable("x"), {lockkit.LockTimeout: 7})
    assert problem is not None and problem.headers == {"Retry-After": "5"}


def test_names_are_filled_from_path_parameters_only_by_plain_fields() -> None:
    assert lock_name("orders:{order_id}:{line}", {"order_id": "42", "line": 3}) == "orders:42:3"
    assert lock_name("literal {{braces}}", {}) == "literal {braces}"


def test_a_field_the_route_does_not_define_is_a_usage_error() -> None:
    with pytest.raises(lockkit.LockUsageError, match="order_id"):
        lock_name("orders:{order_id}", {"id": "42"})
