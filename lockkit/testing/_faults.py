"""A backend wrapper that injects faults, for testing lockkit and code built on it.

:class:`FaultyBackend` forwards every call to an inner backend, except where a fault
is set for that primitive: fail before the call reaches the server, lose the reply
after the server applied it, add latency, or hang until released. It needs no server
and no root, and runs on a :class:`~lockkit.testing.VirtualClock` too.

.. code-block:: python

    backend = FaultyBackend(MemoryBackend())
    async with LockClient(backend) as locks:
        backend.fail("extend")            # renewals now fail without an answer
        ...
        backend.heal()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, final

import anyio

from .._core._backend import (
    Backend,
    BackendContext,
    BackendStatistics,
    Claim,
    Grant,
    LockInfo,
    Renewal,
)
from .._core._errors import BackendUnavailable
from .._core._url import LockURL

__all__ = ("FaultyBackend", "Primitive")

#: The primitives a fault can be set on.
Primitive = Literal["acquire", "release", "extend", "inspect", "ping"]


@dataclasses.dataclass(slots=True)
class _Fault:
    kind: Literal["fail", "lose_reply", "delay", "delay_reply", "hang"]
    seconds: float = 0.0
    times: int | None = None


@final
class FaultyBackend(Backend):
    """Wraps ``inner`` and injects faults per primitive (see the module docstring).

    ``calls`` counts the calls per primitive that reached the wrapper.

    .. versionadded:: 0.1
    """

    kind: ClassVar[str] = "faulty"

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.kind = inner.kind  # type: ignore[misc]  # tokens name the real backend
        self.capabilities = inner.capabilities  # type: ignore[misc]
        self._faults: dict[str, _Fault] = {}
        self._released = anyio.Event()
        self.calls: dict[str, int] = {}

    @classmethod
    def from_url(cls, url: LockURL, **options: Any) -> FaultyBackend:
        from .._core._registry import backend_class

        return cls(backend_class(url.scheme).from_url(url, **options))

    # -- setting faults ----------------------------------------------------------------

    def fail(self, *primitives: Primitive, times: int | None = None) -> None:
        """Raise BackendUnavailable before the call reaches the server."""
        for p in primitives:
            self._faults[p] = _Fault("fail", times=times)

    def lose_reply(self, *primitives: Primitive, times: int | None = None) -> None:
        """Let the server apply the call, then raise BackendUnavailable."""
        for p in primitives:
            self._faults[p] = _Fault("lose_reply", times=times)

    def delay(self, seconds: float, *primitives: Primitive) -> None:
        """Add ``seconds`` of latency before the call reaches the server."""
        for p in primitives:
            self._faults[p] = _Fault("delay", seconds)

    def delay_reply(self, seconds: float, *primitives: Primitive) -> None:
        """Let the server apply the call at once, and deliver its reply ``seconds`` later
        (on the client's clock, so a VirtualClock test can jump over it)."""
        for p in primitives:
            self._faults[p] = _Fault("delay_reply", seconds)

    def hang(self, *primitives: Primitive) -> None:
        """Block calls (before they reach the server) until :meth:`heal`."""
        for p in primitives:
            self._faults[p] = _Fault("hang")

    def heal(self, *primitives: Primitive) -> None:
        """Remove the faults of ``primitives`` (all when none given); hung calls go on."""
        for p in primitives or list(self._faults):
            self._faults.pop(p, None)
        self._released.set()
        self._released = anyio.Event()

    async def _before(self, primitive: str) -> _Fault | None:
        self.calls[primitive] = self.calls.get(primitive, 0) + 1
        fault = self._faults.get(primitive)
        if fault is None:
            return None
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                del self._faults[primitive]
        if fault.kind == "fail":
            raise BackendUnavailable(f"injected fault: {primitive} failed")
        if fault.kind == "delay":
            await self.clock.sleep_until(self.clock.now() + fault.seconds)
        elif fault.kind == "hang":
            while self._faults.get(primitive) is fault:
                await self._released.wait()
        return fault

    async def _after(self, primitive: str, fault: _Fault | None) -> None:
        if fault is None:
            return
        if fault.kind == "lose_reply":
            raise BackendUnavailable(f"injected fault: the reply to {primitive} was lost")
        if fault.kind == "delay_reply":
            await self.clock.sleep_until(self.clock.now() + fault.seconds)

    # -- the backend -------------------------------------------------------------------

    async def aopen(self, ctx: BackendContext) -> None:
        await super().aopen(ctx)
        await self.inner.aopen(ctx)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def ping(self) -> None:
        fault = await self._before("ping")
        await self.inner.ping()
        await self._after("ping", fault)

    async def acquire(self, claim: Claim, *, timeout: float | None) -> Grant:
        fault = await self._before("acquire")
        grant = await self.inner.acquire(claim, timeout=timeout)
        try:
            await self._after("acquire", fault)
        except BaseException:
            # the reply was lost (or its wait cancelled) after the grant: as a real
            # backend must, leave nothing behind
            with anyio.CancelScope(shield=True):
                await self.inner.release(claim.name, claim.owner)
            raise
        return grant

    async def release(self, name: str, owner: str) -> bool:
        fault = await self._before("release")
        result = await self.inner.release(name, owner)
        await self._after("release", fault)
        return result

    async def extend(self, name: str, owner: str, *, ttl: float) -> bool:
        fault = await self._before("extend")
        result = await self.inner.extend(name, owner, ttl=ttl)
        await self._after("extend", fault)
        return result

    async def extend_many(self, renewals: Sequence[Renewal]) -> list[bool | BaseException]:
        if "extend" not in self._faults:
            self.calls["extend"] = self.calls.get("extend", 0) + len(renewals)
            return await self.inner.extend_many(renewals)
        return await super().extend_many(renewals)

    async def inspect(self, name: str) -> LockInfo:
        fault = await self._before("inspect")
        info = await self.inner.inspect(name)
        await self._after("inspect", fault)
        return info

    def statistics(self) -> BackendStatistics:
        return self.inner.statistics()

    def __repr__(self) -> str:
        return f"<FaultyBackend {self.inner!r}>"
