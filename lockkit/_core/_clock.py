"""Clocks. Every deadline in lockkit is on an injected monotonic clock, never wall time."""

from __future__ import annotations

import math
import time
from typing import Protocol, final, runtime_checkable

import anyio

__all__ = ("Clock", "MonotonicClock")


@runtime_checkable
class Clock(Protocol):
    """What lockkit needs from a clock. ``lockkit.testing.VirtualClock`` is the other one.

    .. versionadded:: 0.1
    """

    def now(self) -> float:
        """Seconds on a monotonic scale; only differences mean anything."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``now() >= deadline``."""
        ...

    async def wait(self, event: anyio.Event, deadline: float | None) -> bool:
        """Wait for ``event`` until ``deadline`` (``None``: no limit). True if it was set."""
        ...


@final
class MonotonicClock:
    """The real clock: ``time.monotonic``, the same scale asyncio's loop uses.

    .. versionadded:: 0.1
    """

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        await anyio.sleep(max(0.0, deadline - time.monotonic()))

    async def wait(self, event: anyio.Event, deadline: float | None) -> bool:
        if event.is_set():
            return True
        if deadline is None or math.isinf(deadline):
            await event.wait()
            return True
        with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
            await event.wait()
        return event.is_set()

    def __repr__(self) -> str:
        return "MonotonicClock()"
