"""The inventory demo behind ``lockkit demo``.

Several buyers decrement one stock counter under a lock; the counter lives behind a
guard. One buyer stalls (as a process does in a long GC pause or under SIGSTOP) past
its lease while holding the lock, then wakes up and writes with its old token: the
guard refuses it. The demo ends by checking the invariants.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Literal

import anyio

from ._core._client import LockClient, connect
from ._core._errors import LockLostError, StaleTokenError
from .guards.memory import MemoryGuard
from .testing import pause_renewals

__all__ = ("DemoReport", "run_demo")

SKU = "inventory:sku-42"


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    at: float
    worker: str
    what: str
    token: int | None = None
    stock: int | None = None
    kind: Literal["ok", "warn", "refused", "info"] = "ok"


@dataclasses.dataclass(slots=True)
class DemoReport:
    url: str
    initial_stock: int
    final_stock: int = 0
    sold: int = 0
    stale_accepted: int = 0
    stale_refused: int = 0
    losses_reported: int = 0
    events: list[Event] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.final_stock >= 0
            and self.sold + self.final_stock == self.initial_stock
            and self.stale_accepted == 0
            and self.stale_refused >= 1
        )


async def run_demo(
    url: str = "memory://", *, workers: int = 4, stock: int = 12, ttl: float = 0.5
) -> DemoReport:
    """Run the demo against ``url`` and return what happened."""
    if url.rstrip("/") == "memory:":
        url = "memory://lockkit-demo"  # one store shared by the demo's clients
    report = DemoReport(url=url, initial_stock=stock)
    guard: MemoryGuard[int] = MemoryGuard()
    t0 = time.monotonic()

    def log(
        worker: str,
        what: str,
        token: int | None = None,
        *,
        stock: int | None = None,
        kind: Literal["ok", "warn", "refused", "info"] = "ok",
    ) -> None:
        report.events.append(
            Event(round(time.monotonic() - t0, 3), worker, what, token, stock, kind)
        )

    async with connect(url) as locks, connect(url) as stalled_client:
        # seed the stock with a first token
        async with locks.lock(SKU, ttl=ttl * 10, timeout=10) as token:
            await guard.write(SKU, stock, token=token)
            log("setup", f"stock set to {stock}", int(token), stock=stock)

        stalled_has_read = anyio.Event()

        async def stalled_buyer() -> None:
            name = "buyer-S"
            with pause_renewals(stalled_client):
                try:
                    async with stalled_client.lock(
                        SKU, ttl=ttl, timeout=10, on_lost="raise"
                    ) as token:
                        current = await guard.read(SKU) or 0
                        log(
                            name,
                            "holds the lock, reads stock, then stalls",
                            int(token),
                            stock=current,
                        )
                        stalled_has_read.set()
                        await anyio.sleep(ttl * 3)  # a long pause: the lease runs out
                        log(name, "wakes up and writes with its old token", int(token), kind="warn")
                        try:
                            await guard.write(SKU, current - 1, token=token)
                            report.stale_accepted += 1
                            log(name, "STALE WRITE ACCEPTED", int(token), kind="warn")
                        except StaleTokenError as exc:
                            report.stale_refused += 1
                            log(
                                name,
                                f"write refused: token {exc.offered} < current {exc.current}",
                                int(token),
                                kind="refused",
                            )
                except LockLostError as exc:
                    report.losses_reported += 1
                    log(name, f"told on exit: {exc.reason}", kind="info")

        async def buyer(i: int, client: LockClient) -> None:
            name = f"buyer-{i}"
            await stalled_has_read.wait()
            while True:
                async with client.lock(SKU, ttl=ttl * 4, timeout=30) as token:
                    current = await guard.read(SKU) or 0
                    if current <= 0:
                        log(name, "sold out", int(token), stock=current, kind="info")
                        return
                    await anyio.sleep(0.005)  # the work done under the lock
                    await guard.write(SKU, current - 1, token=token)
                    report.sold += 1
                    log(name, "bought one", int(token), stock=current - 1)
                await anyio.sleep(0.02)

        async with anyio.create_task_group() as tg:
            tg.start_soon(stalled_buyer)
            for i in range(1, workers + 1):
                tg.start_soon(buyer, i, locks)

        report.final_stock = await guard.read(SKU) or 0
    return report
