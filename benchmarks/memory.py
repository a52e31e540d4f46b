"""memory:// against the floor of an in-process lock: ``asyncio.Lock``."""

from __future__ import annotations

import asyncio

import lockkit

from .harness import Result, contended, rate, uncontended_cycles


async def run(duration: float) -> list[Result]:
    floor_lock = asyncio.Lock()

    async def floor_cycle() -> None:
        await floor_lock.acquire()
        floor_lock.release()

    floor = await rate(floor_cycle, duration)
    results = [Result("memory", "floor: asyncio.Lock acquire+release", {"cycles_per_s": floor})]
    async with lockkit.connect("memory://bench") as a, lockkit.connect("memory://bench") as b:
        cycles = await uncontended_cycles(a, "bench:uncontended", duration)
        results.append(
            Result(
                "memory",
                "lockkit memory:// uncontended acquire+release",
                {"cycles_per_s": cycles, "x_floor": cycles / floor},
            )
        )
        for tasks in (8, 64):
            figures = await contended([a, b], f"bench:contended:{tasks}", tasks, duration)
            results.append(Result("memory", f"lockkit memory:// contended, {tasks} tasks", figures))
    return results
