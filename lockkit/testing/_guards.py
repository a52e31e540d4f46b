"""The guard conformance suite: the acceptance rule every guard must apply in its storage.

Each check is an ``async`` function taking a :data:`GuardFactory` (a callable returning a
new, unopened guard; guards from one factory share their storage, as two processes
sharing a database do) and a ``prefix`` for the resource names it uses. The checks store
``str`` values, which every guard must give back equal. Checks of an optional operation
run only on guards declaring its :class:`~lockkit.abc.GuardCapability`.

Tokens are made here with :class:`~lockkit.FencingToken` directly: a guard only compares
them, so no lock backend is needed.

Run them all with :func:`check_guard`, or one per test with :data:`GUARD_CHECKS`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import anyio

from .._core._errors import InvalidLockName, StaleTokenError, WriteConflictError
from .._core._fence import Guard, GuardCapability
from .._core._token import FencingToken

__all__ = ("GUARD_CHECKS", "GuardFactory", "check_guard")

GuardFactory = Callable[[], Guard[Any]]
GuardCheck = Callable[[GuardFactory, str], Awaitable[None]]

_LOCK = "conformance-lock"
_BACKEND = "conformance"


def _token(value: int, owner: str = "holder-a", lock: str = _LOCK) -> FencingToken:
    return FencingToken(value, name=lock, backend=_BACKEND, owner=owner)


def _resource(prefix: str, what: str) -> str:
    return f"{prefix}{what}:{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def _refused(kind: type[Exception], failure: str) -> Iterator[list[Exception]]:
    caught: list[Exception] = []
    try:
        yield caught
    except kind as exc:
        caught.append(exc)
    else:
        raise AssertionError(failure)


async def _stored(guard: Guard[Any], resource: str) -> object:
    """What ``resource`` holds, if the guard can say (else its fence)."""
    if GuardCapability.READ in guard.capabilities:
        return await guard.read(resource)
    fence = await guard.fence(resource)
    return None if fence is None else (fence.token, fence.owner)


async def check_higher_token_accepted(factory: GuardFactory, prefix: str) -> None:
    """A token higher than the fence is accepted and raises the fence."""
    resource = _resource(prefix, "higher")
    async with factory() as guard:
        await guard.write(resource, "one", token=_token(10))
        await guard.write(resource, "two", token=_token(11, owner="holder-b"))
        fence = await guard.fence(resource)
        assert fence is not None, "no fence after two accepted writes"
        assert (fence.token, fence.owner) == (11, "holder-b"), f"wrong fence {fence}"
        assert (fence.lock, fence.backend) == (_LOCK, _BACKEND), f"wrong fence {fence}"
        if GuardCapability.READ in guard.capabilities:
            assert await guard.read(resource) == "two"


async def check_same_acquisition_writes_again(factory: GuardFactory, prefix: str) -> None:
    """The holder that set the fence may write again with the same token."""
    resource = _resource(prefix, "again")
    async with factory() as guard:
        token = _token(7)
        await guard.write(resource, "first", token=token)
        await guard.write(resource, "second", token=token)
        if GuardCapability.READ in guard.capabilities:
            assert await guard.read(resource) == "second"


async def check_equal_token_of_another_acquisition_refused(
    factory: GuardFactory, prefix: str
) -> None:
    """The fence's number from another acquisition is a token handed out twice."""
    resource = _resource(prefix, "twice")
    async with factory() as guard:
        await guard.write(resource, "kept", token=_token(5, owner="holder-a"))
        with _refused(StaleTokenError, "an equal token of another acquisition was accepted"):
            await guard.write(resource, "lost", token=_token(5, owner="holder-b"))
        assert await _stored(guard, resource) in ("kept", (5, "holder-a"))


async def check_token_of_another_lock_refused(factory: GuardFactory, prefix: str) -> None:
    """A resource fenced by one lock refuses tokens of another, however high."""
    resource = _resource(prefix, "other-lock")
    async with factory() as guard:
        await guard.write(resource, "kept", token=_token(5))
        with _refused(StaleTokenError, "a token of another lock was accepted"):
            await guard.write(resource, "lost", token=_token(500, lock="another-lock"))
        fence = await guard.fence(resource)
        assert fence is not None and fence.token == 5 and fence.lock == _LOCK


async def check_older_token_refused(factory: GuardFactory, prefix: str) -> None:
    """An older token is refused with the resource, the offered and the current token,
    and nothing is written."""
    resource = _resource(prefix, "older")
    async with factory() as guard:
        await guard.write(resource, "new", token=_token(9, owner="holder-b"))
        with _refused(StaleTokenError, "an older token was accepted") as caught:
            await guard.write(resource, "old", token=_token(8))
        error = caught[0]
        assert isinstance(error, StaleTokenError)
        assert error.resource == resource, error
        assert int(error.offered) == 8 and error.current == 9, error
        fence = await guard.fence(resource)
        assert fence is not None and (fence.token, fence.owner) == (9, "holder-b")
        if GuardCapability.READ in guard.capabilities:
            assert await guard.read(resource) == "new", "a refused write changed the value"


async def check_concurrent_writers(factory: GuardFactory, prefix: str) -> None:
    """50 writers with mixed tokens at once, over 5 guard instances: the highest token's
    value is what stays, and every refusal names a token below the final fence."""
    resource = _resource(prefix, "race")
    values = list(range(1, 51))
    order = values[25:] + values[:25][::-1]  # neither rising nor falling
    refused: list[StaleTokenError] = []
    async with contextlib.AsyncExitStack() as stack:
        guards = [await stack.enter_async_context(factory()) for _ in range(5)]

        async def write(i: int, value: int) -> None:
            try:
                await guards[i % 5].write(
                    resource, f"v{value}", token=_token(value, owner=f"w{value}")
                )
            except StaleTokenError as exc:
                refused.append(exc)

        async with anyio.create_task_group() as tg:
            for i, value in enumerate(order):
                tg.start_soon(write, i, value)
        fence = await guards[0].fence(resource)
        assert fence is not None and fence.token == 50, f"fence {fence}, expected 50"
        if GuardCapability.READ in guards[0].capabilities:
            assert await guards[0].read(resource) == "v50", "the highest token's write was lost"
        assert all(int(exc.offered) < 50 for exc in refused), "the highest token was refused"


async def check_fence_survives_a_new_guard(factory: GuardFactory, prefix: str) -> None:
    """The fence lives in the storage, not in the guard object."""
    resource = _resource(prefix, "survives")
    async with factory() as guard:
        await guard.write(resource, "v", token=_token(20))
    async with factory() as guard:
        fence = await guard.fence(resource)
        assert fence is not None and fence.token == 20, "a new guard forgot the fence"
        with _refused(StaleTokenError, "a new guard accepted an older token"):
            await guard.write(resource, "w", token=_token(19))


async def check_nothing_written_on_refusal(factory: GuardFactory, prefix: str) -> None:
    """A refused write to a resource that has no value leaves it without one."""
    async with factory() as guard:
        fresh = _resource(prefix, "nothing")
        # a resource fenced by check() only, if the guard offers it; else a plain write
        if GuardCapability.CHECK in guard.capabilities:
            await guard.check(fresh, token=_token(3))
        else:
            await guard.write(fresh, "first", token=_token(3))
        before = await _stored(guard, fresh)
        with _refused(StaleTokenError, "a stale write was accepted"):
            await guard.write(fresh, "stale", token=_token(2))
        assert await _stored(guard, fresh) == before, "a refused write changed the resource"


async def check_bad_input(factory: GuardFactory, prefix: str) -> None:
    """A plain int instead of a token, or an empty resource name, is a clear error."""
    async with factory() as guard:
        with _refused(TypeError, "a plain int was taken for a token"):
            await guard.write(_resource(prefix, "bad"), "v", token=5)  # type: ignore[arg-type]
        with _refused(InvalidLockName, "an empty resource name was taken"):
            await guard.write("", "v", token=_token(1))


async def check_check_raises_the_fence(factory: GuardFactory, prefix: str) -> None:
    """``check()`` accepts a token like a write, without storing a value."""
    resource = _resource(prefix, "check")
    async with factory() as guard:
        await guard.check(resource, token=_token(4))
        fence = await guard.fence(resource)
        assert fence is not None and fence.token == 4
        if GuardCapability.READ in guard.capabilities:
            assert await guard.read(resource) is None, "check() stored a value"
        with _refused(StaleTokenError, "check() accepted an older token"):
            await guard.check(resource, token=_token(3))


async def check_versions(factory: GuardFactory, prefix: str) -> None:
    """Versions start at 1 and rise by one per accepted write; a write expecting an old
    version is refused with both versions, and writes nothing."""
    resource = _resource(prefix, "versions")
    async with factory() as guard:
        assert await guard.read_versioned(resource) is None
        await guard.write(resource, "a", token=_token(1), expect_version=0)
        first = await guard.read_versioned(resource)
        assert first is not None and (first.value, first.version) == ("a", 1), first
        await guard.write(resource, "b", token=_token(1))
        with _refused(WriteConflictError, "a write at a stale version was accepted") as caught:
            await guard.write(resource, "c", token=_token(2), expect_version=1)
        error = caught[0]
        assert isinstance(error, WriteConflictError)
        assert (error.resource, error.expected, error.current) == (resource, 1, 2), error
        now = await guard.read_versioned(resource)
        assert now is not None and (now.value, now.version) == ("b", 2), now
        fence = await guard.fence(resource)
        assert fence is not None and fence.token == 1, "a conflicting write raised the fence"
        with _refused(WriteConflictError, "expect_version=0 accepted an existing value"):
            await guard.write(resource, "d", token=_token(2), expect_version=0)
        with _refused(StaleTokenError, "a stale token passed because the version matched"):
            await guard.write(resource, "e", token=_token(0), expect_version=2)


async def check_update_loses_nothing(factory: GuardFactory, prefix: str) -> None:
    """20 increments through ``update()`` over 4 guard instances at once, by two holders
    one after the other's token: every increment by the live holder lands, and the
    stale holder's are refused, never applied over a newer value."""
    resource = _resource(prefix, "update")
    old, new = _token(1, owner="old"), _token(2, owner="new")
    refused = 0
    async with contextlib.AsyncExitStack() as stack:
        guards = [await stack.enter_async_context(factory()) for _ in range(4)]
        await guards[0].write(resource, "0", token=old)

        def increment(value: str | None) -> str:
            return str(int(value or "0") + 1)

        async def bump(i: int, token: FencingToken) -> None:
            nonlocal refused
            try:
                await guards[i % 4].update(resource, increment, token=token, attempts=200)
            except StaleTokenError:
                refused += 1

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(bump, i, new)
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(bump, i, old)
        assert await guards[0].read(resource) == "20", "an update was lost"
        assert refused == 5, f"{refused} of the stale holder's 5 updates were refused"


GUARD_CHECKS: Final[tuple[tuple[GuardCheck, GuardCapability | None], ...]] = (
    (check_higher_token_accepted, None),
    (check_same_acquisition_writes_again, None),
    (check_equal_token_of_another_acquisition_refused, None),
    (check_token_of_another_lock_refused, None),
    (check_older_token_refused, None),
    (check_concurrent_writers, None),
    (check_fence_survives_a_new_guard, None),
    (check_nothing_written_on_refusal, None),
    (check_bad_input, None),
    (check_check_raises_the_fence, GuardCapability.CHECK),
    (check_versions, GuardCapability.VERSIONED),
    (check_update_loses_nothing, GuardCapability.VERSIONED),
)
"""Every guard check, with the capability it needs (``None``: every guard)."""


async def check_guard(factory: GuardFactory, prefix: str = "lockkit-guard-check:") -> list[str]:
    """Run every check that applies to the factory's guards; return the names of those
    that ran. Raises at the first failure.

    Example::

        await check_guard(lambda: RedisGuard.from_url("redis://localhost"))
    """
    async with factory() as probe:
        capabilities = probe.capabilities
    ran = []
    for check, needs in GUARD_CHECKS:
        if needs is None or needs in capabilities:
            await check(factory, prefix)
            ran.append(check.__name__)
    return ran
