"""The backend conformance suite: the semantics every backend must show.

Each check is an ``async`` function taking a :data:`ClientFactory` (a callable that
returns a new, unopened :class:`lockkit.LockClient` on the backend under test; clients
from one factory must share locks) and a ``prefix`` for the lock names it uses. A check
raises ``AssertionError`` (or a lockkit error) when the backend misbehaves.

Run them all with :func:`check_backend`, or one per test with :data:`CHECKS`.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Final

import anyio
import anyio.lowlevel

from .._core._backend import Capability
from .._core._client import LockClient
from .._core._errors import (
    ConfigurationError,
    InvalidLockName,
    LockLostError,
    LockNotOwnedError,
    LockTimeout,
    StaleTokenError,
)
from .._core._names import MAX_NAME_BYTES
from .._core._token import FencingToken
from ..guards.memory import MemoryGuard

__all__ = ("CHECKS", "ClientFactory", "check_backend", "pause_renewals")

ClientFactory = Callable[[], LockClient]
Check = Callable[[ClientFactory, str], Awaitable[None]]


@contextlib.contextmanager
def pause_renewals(client: LockClient) -> Iterator[None]:
    """Stop the client's watchdog from sending renewals (deadlines are still enforced),
    as if the holder's process were paused. Leases it holds run out at their ttl."""
    with client.session.pause_renewals():
        yield


@contextlib.contextmanager
def _expect(exc_type: type[BaseException], failure: str) -> Iterator[list[BaseException]]:
    """The block must raise ``exc_type``; the caught exception is appended to the list."""
    caught: list[BaseException] = []
    try:
        yield caught
    except exc_type as exc:
        caught.append(exc)
    else:
        raise AssertionError(failure)


@contextlib.asynccontextmanager
async def _clients(factory: ClientFactory, count: int) -> AsyncIterator[list[LockClient]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(factory()) for _ in range(count)]


def _name(prefix: str, what: str) -> str:
    return f"{prefix}{what}:{uuid.uuid4().hex[:8]}"


async def check_mutual_exclusion(factory: ClientFactory, prefix: str) -> None:
    """100 tasks over two clients; never two inside at once; tokens rise in entry order."""
    name = _name(prefix, "mutex")
    inside = 0
    overlaps = 0
    tokens: list[int] = []
    async with _clients(factory, 2) as clients:

        async def worker(client: LockClient) -> None:
            nonlocal inside, overlaps
            async with client.lock(name, ttl=10, timeout=60) as token:
                inside += 1
                overlaps += inside > 1
                tokens.append(int(token))
                await anyio.lowlevel.checkpoint()
                await anyio.lowlevel.checkpoint()
                inside -= 1

        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(worker, clients[i % 2])
        assert overlaps == 0, f"{overlaps} overlapping holders of {name!r}"
        assert len(tokens) == 100
        assert tokens == sorted(tokens) and len(set(tokens)) == 100, "tokens not increasing"
        assert (await clients[0].inspect(name)).idle, "state left behind after 100 holders"


async def check_tokens_increase(factory: ClientFactory, prefix: str) -> None:
    """1,000 successive holders, alternating clients: every token beats the last."""
    name = _name(prefix, "tokens")
    async with _clients(factory, 2) as clients:
        locks = [c.lock(name, ttl=10, timeout=10) for c in clients]
        last = -1
        for i in range(1000):
            token = await locks[i % 2].acquire()
            assert isinstance(token, FencingToken)
            assert token.name == name and token.backend == clients[0].backend.kind
            assert int(token) > last, f"holder {i}: token {int(token)} after {last}"
            last = int(token)
            await locks[i % 2].release()


async def check_try_once(factory: ClientFactory, prefix: str) -> None:
    """``timeout=0`` fails at once against a holder and leaves no waiter behind."""
    name = _name(prefix, "try")
    async with _clients(factory, 2) as (a, b):
        async with a.lock(name, ttl=10):
            started = time.monotonic()
            with _expect(LockTimeout, "timeout=0 acquired a held lock") as caught:
                await b.lock(name, timeout=0).acquire()
            exc = caught[0]
            assert isinstance(exc, LockTimeout) and exc.name == name and exc.timeout == 0
            assert time.monotonic() - started < 2.0, "timeout=0 waited"
            info = await a.inspect(name)
            assert info.waiters == 0 and info.holder is not None
        token = await b.lock(name, timeout=0).acquire()
        assert int(token) > 0


async def check_timeout(factory: ClientFactory, prefix: str) -> None:
    """``timeout=x`` raises LockTimeout after about x; succeeds if freed within x."""
    name = _name(prefix, "timeout")
    async with _clients(factory, 2) as (a, b):
        holder = a.lock(name, ttl=10)
        await holder.acquire()
        started = time.monotonic()
        with _expect(LockTimeout, "acquired a held lock"):
            await b.lock(name, timeout=0.3).acquire()
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 3.0, f"LockTimeout after {elapsed:.3f}s, wanted 0.3s"
        assert (await a.inspect(name)).waiters == 0, "a timed-out waiter stayed queued"

        async def release_soon() -> None:
            await anyio.sleep(0.2)
            await holder.release()

        async with anyio.create_task_group() as tg:
            tg.start_soon(release_soon)
            waiter = b.lock(name, timeout=5)
            token = await waiter.acquire()
            await waiter.release()
        assert int(token) > 0


async def check_release_by_non_owner(factory: ClientFactory, prefix: str) -> None:
    """Releasing or extending a lock one does not hold raises LockNotOwnedError and
    leaves the real holder alone."""
    name = _name(prefix, "owner")
    async with _clients(factory, 2) as (a, b):
        holder = a.lock(name, ttl=10)
        token = await holder.acquire()
        for call in (b.lock(name).release, b.lock(name).extend, a.lock(name).release):
            with _expect(LockNotOwnedError, f"{call.__qualname__} by a non-owner succeeded") as c:
                await call()
            assert isinstance(c[0], LockNotOwnedError) and c[0].name == name
        info = await a.inspect(name)
        assert info.holder is not None and info.holder.owner == token.owner
        await holder.release()
        with _expect(LockNotOwnedError, "a second release() succeeded"):
            await holder.release()
        assert (await a.inspect(name)).idle


async def check_loss_cancels_body(factory: ClientFactory, prefix: str) -> None:
    """A holder whose renewals stop loses the lock at its ttl: the body is cancelled,
    ``async with`` raises LockLostError, the next holder gets a higher token and a
    guard refuses the old holder's write."""
    name = _name(prefix, "loss")
    guard: MemoryGuard[str] = MemoryGuard()
    async with _clients(factory, 2) as (a, b):
        finished = False
        old: FencingToken | None = None
        started = time.monotonic()
        with _expect(LockLostError, "loss of a lock went unreported") as caught:
            with pause_renewals(a):
                async with a.lock(name, ttl=0.6) as old:
                    await guard.write("res", "first", token=old)
                    await anyio.sleep(10)
                    finished = True
        lost = caught[0]
        assert isinstance(lost, LockLostError) and lost.name == name and lost.token is not None
        elapsed = time.monotonic() - started
        assert not finished, "the body was not cancelled on loss"
        assert elapsed < 5, f"loss reported after {elapsed:.2f}s for a 0.6s ttl"
        assert old is not None
        async with b.lock(name, ttl=10, timeout=10) as new:
            assert int(new) > int(old)
            await guard.write("res", "second", token=new)
        with _expect(StaleTokenError, "the guard accepted a stale token") as caught:
            await guard.write("res", "stale", token=old)
        refused = caught[0]
        assert isinstance(refused, StaleTokenError)
        assert refused.offered == old and refused.current == new
        assert await guard.read("res") == "second"


async def check_renewal_keeps_lock(factory: ClientFactory, prefix: str) -> None:
    """The watchdog keeps a short lease alive well past its ttl."""
    name = _name(prefix, "renew")
    async with _clients(factory, 2) as (a, b):
        async with a.lock(name, ttl=0.8) as token:
            await anyio.sleep(2.0)  # 2.5 ttls: about six renewals
            with _expect(LockTimeout, "a renewed lock was taken by another client"):
                await b.lock(name, timeout=0).acquire()
            info = await a.inspect(name)
            assert info.holder is not None and info.holder.owner == token.owner


async def check_expiry_frees_lock(factory: ClientFactory, prefix: str) -> None:
    """A holder that neither renews nor releases frees the lock after its ttl."""
    name = _name(prefix, "expiry")
    async with _clients(factory, 2) as (a, b):
        first = await a.lock(name, ttl=0.3, renew=False).acquire()
        started = time.monotonic()
        waiter = b.lock(name, ttl=10, timeout=5)
        second = await waiter.acquire()
        elapsed = time.monotonic() - started
        assert int(second) > int(first)
        assert elapsed < 2.5, f"waited {elapsed:.2f}s for a 0.3s ttl"
        await waiter.release()


async def check_cancelled_waiters_leave_nothing(factory: ClientFactory, prefix: str) -> None:
    """Cancelled waiters leave no queue entry; after release the name is idle."""
    name = _name(prefix, "cancel")
    async with _clients(factory, 2) as (a, b):
        holder = a.lock(name, ttl=10)
        await holder.acquire()
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(b.lock(name, ttl=10).acquire)
            with anyio.move_on_after(5):
                while (await a.inspect(name)).waiters < 10:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            info = await a.inspect(name)
            assert info.waiters == 10, f"{info.waiters} of 10 waiters queued"
            tg.cancel_scope.cancel()
        with anyio.fail_after(5):
            while (await a.inspect(name)).waiters:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        await holder.release()
        info = await a.inspect(name)
        assert info.idle, f"state left behind: {info}"
        assert b.held_count == 0


async def check_cancelled_body_releases(factory: ClientFactory, prefix: str) -> None:
    """Cancelling the body of ``async with`` still releases the lock."""
    name = _name(prefix, "cancel-body")
    async with _clients(factory, 1) as (a,):
        with anyio.move_on_after(0.2):
            async with a.lock(name, ttl=10):
                await anyio.sleep(10)
        info = await a.inspect(name)
        assert info.idle, f"a cancelled body left {info}"
        assert a.held_count == 0


async def check_fifo(factory: ClientFactory, prefix: str) -> None:
    """Waiters are served in arrival order and a releasing holder cannot barge."""
    name = _name(prefix, "fifo")
    order: list[int] = []
    async with _clients(factory, 2) as clients:
        first = clients[0].lock(name, ttl=10)
        await first.acquire()

        async def waiter(i: int) -> None:
            async with clients[i % 2].lock(name, ttl=10):
                order.append(i)

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(waiter, i)
                with anyio.fail_after(5):  # wait until it is queued
                    while (await clients[0].inspect(name)).waiters < i + 1:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
            await first.release()
            try:  # the old holder asks again at once: it must queue, not barge
                barger = await clients[0].lock(name, ttl=10, timeout=0).acquire()
            except LockTimeout:
                barger = None
            assert barger is None, "a releasing holder barged ahead of queued waiters"
        assert order == list(range(6)), f"served out of order: {order}"


async def check_bad_input(factory: ClientFactory, prefix: str) -> None:
    """Bad names, ttl and timeout fail fast with the documented errors."""
    async with _clients(factory, 1) as (a,):
        for bad_name in ("", "a\x00b", "line\nbreak", "x" * (MAX_NAME_BYTES + 1)):
            with _expect(InvalidLockName, f"name {bad_name[:20]!r} accepted"):
                a.lock(bad_name)
        for ttl in (0, -1, math.inf, math.nan):
            with _expect(ConfigurationError, f"ttl={ttl} accepted"):
                a.lock(_name(prefix, "bad"), ttl=ttl)
        with _expect(ConfigurationError, "timeout=-1 accepted"):
            a.lock(_name(prefix, "bad"), timeout=-1)
        # names that look alike are different locks: each is free while the others
        # are held, and the server names each one's own holder
        base = _name(prefix, "enc")
        names = [base, base + "/x", base + ":x", base + "%7B", base + "{x}", base + "}"]
        locks = [a.lock(n, ttl=10, timeout=0) for n in names]
        held = [await lock.acquire() for lock in locks]
        for n, token in zip(names, held, strict=True):
            info = await a.inspect(n)
            assert info.holder is not None and info.holder.owner == token.owner, (
                f"lock {n!r} shares its state with another name"
            )
        for lock in locks:
            await lock.release()


async def check_old_holder_cannot_touch_new_holder(factory: ClientFactory, prefix: str) -> None:
    """An expired holder's release and extend, sent with its own owner id straight to
    the backend (past the client's books, as a paused process's late request would
    arrive), answer False and leave the next holder's lock and lease alone."""
    name = _name(prefix, "stale-owner")
    async with _clients(factory, 2) as (a, b):
        old = await a.lock(name, ttl=0.3, renew=False).acquire()
        lock = b.lock(name, ttl=5, timeout=10)
        new = await lock.acquire()  # waits out the old lease
        backend = a.backend
        released = await backend.release(name, old.owner)
        assert released is False, "an expired holder's release freed the next holder's lock"
        extended = await backend.extend(name, old.owner, ttl=60)
        assert extended is False, "an expired holder's extend renewed the next holder's lock"
        info = await a.inspect(name)
        assert info.holder is not None and info.holder.owner == new.owner, (
            "the next holder lost its lock to the old holder's late request"
        )
        expires = info.holder.expires_in
        assert expires is None or expires <= 5.5, (
            f"the old holder's extend moved the lease to {expires}s"
        )
        await lock.release()


async def check_deadlines_count_from_the_send(factory: ClientFactory, prefix: str) -> None:
    """A lease's safe deadline counts from a clock reading taken before the acquire (or
    the renewal) was sent, never from its reply: a slow reply can only shorten it."""
    name = _name(prefix, "deadline")
    async with _clients(factory, 1) as (a,):
        lock = a.lock(name, ttl=10)
        for step in ("acquire", "extend"):
            before = a.clock.now()
            await (lock.acquire() if step == "acquire" else lock.extend())
            after = a.clock.now()
            lease = lock.lease
            assert lease is not None
            started = lease.safe_deadline - lease.ttl + lease.drift
            assert before - 1e-6 <= started <= after + 1e-6, (
                f"{step}: the lease counts from {started - before:+.6f}s after the call began "
                f"(the call took {after - before:.6f}s)"
            )
        await lock.release()


async def check_no_barging_after_expiry(factory: ClientFactory, prefix: str) -> None:
    """When a holder's lease runs out while another client waits, the waiter gets the
    lock; a newcomer asking again and again around the expiry never barges past it."""
    name = _name(prefix, "expiry-fifo")
    async with _clients(factory, 3) as (a, b, c):
        first = await a.lock(name, ttl=0.5, renew=False).acquire()
        waiter = b.lock(name, ttl=10, timeout=10)
        got: list[FencingToken] = []
        barged: list[FencingToken] = []

        async def wait() -> None:
            got.append(await waiter.acquire())

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            with anyio.fail_after(5):
                while (await c.inspect(name)).waiters < 1:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            newcomer = c.lock(name, ttl=10, timeout=0)
            with anyio.fail_after(10):
                while not got:
                    try:
                        barged.append(await newcomer.acquire())
                    except LockTimeout:
                        await anyio.sleep(0.002)
                    else:
                        await newcomer.release()
                        break
        assert not barged, "a newcomer took the lock past a live waiter when the lease ran out"
        assert got and int(got[0]) > int(first)
        await waiter.release()


#: Every check, in a stable order. ``(function, required capability or None)``.
CHECKS: Final[tuple[tuple[Check, Capability | None], ...]] = (
    (check_bad_input, None),
    (check_mutual_exclusion, None),
    (check_tokens_increase, None),
    (check_try_once, None),
    (check_timeout, None),
    (check_release_by_non_owner, None),
    (check_loss_cancels_body, None),
    (check_renewal_keeps_lock, None),
    (check_expiry_frees_lock, None),
    (check_cancelled_waiters_leave_nothing, None),
    (check_cancelled_body_releases, None),
    (check_old_holder_cannot_touch_new_holder, None),
    (check_deadlines_count_from_the_send, None),
    (check_fifo, Capability.FAIR),
    (check_no_barging_after_expiry, Capability.FAIR),
)


async def check_backend(factory: ClientFactory, prefix: str = "lockkit-check:") -> list[str]:
    """Run every check that applies to the factory's backend; return the names of the
    checks skipped for a missing capability. Raises on the first failure."""
    skipped: list[str] = []
    capabilities = type(factory().backend).capabilities
    for check, needs in CHECKS:
        if needs is not None and needs not in capabilities:
            skipped.append(check.__name__)
            continue
        await check(factory, prefix)
    return skipped
