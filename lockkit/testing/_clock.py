"""A virtual monotonic clock for tests."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from typing import final

import anyio
import anyio.lowlevel

__all__ = ("VirtualClock",)


async def _settle() -> None:
    """Let every other task run until all of them are blocked."""
    try:
        me = asyncio.current_task()
    except RuntimeError:  # pragma: no cover - not on asyncio
        me = None
    if me is None:  # pragma: no cover - trio
        await anyio.wait_all_tasks_blocked()
        return
    loop = asyncio.get_running_loop()
    for _ in range(100_000):
        busy = bool(getattr(loop, "_ready", ()))  # callbacks queued to run now
        for task in asyncio.all_tasks():
            waiter = getattr(task, "_fut_waiter", None)
            if task is not me and (waiter is None or waiter.done()):
                busy = True
                break
        if not busy:
            return
        await asyncio.sleep(0)
    raise RuntimeError("tasks kept running: cannot settle the virtual clock")


@final
class VirtualClock:
    """A :class:`lockkit.Clock` that stands still until :meth:`advance` moves it.

    Give it to :func:`lockkit.connect` (``clock=``) and lease expiry, renewal and
    timeouts all follow it, so a test can jump over a 30 s ttl instantly.

    .. versionadded:: 0.1
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, anyio.Event]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def _timer(self, deadline: float) -> anyio.Event:
        event = anyio.Event()
        heapq.heappush(self._timers, (deadline, next(self._seq), event))
        return event

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        await self._timer(deadline).wait()

    async def wait(self, event: anyio.Event, deadline: float | None) -> bool:
        if event.is_set():
            await anyio.lowlevel.checkpoint()
            return True
        if deadline is None or math.isinf(deadline):
            await event.wait()
            return True
        if deadline <= self._now:
            await anyio.lowlevel.checkpoint()
            return event.is_set()
        timer = self._timer(deadline)

        async def _until(e: anyio.Event, scope: anyio.CancelScope) -> None:
            await e.wait()
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(_until, event, tg.cancel_scope)
            tg.start_soon(_until, timer, tg.cancel_scope)
        return event.is_set()

    async def advance(self, seconds: float) -> None:
        """Move the clock forward, firing timers in order and letting every task
        that wakes run until all are blocked again."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        target = self._now + seconds
        await _settle()
        while self._timers and self._timers[0][0] <= target:
            deadline, _, event = heapq.heappop(self._timers)
            self._now = max(self._now, deadline)
            event.set()
            await _settle()
        self._now = target
        await _settle()

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now:g})"
