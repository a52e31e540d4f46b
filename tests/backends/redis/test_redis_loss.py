"""Loss against a frozen Redis: the caller hears of it when the body is cancelled."""

from __future__ import annotations

import time

import anyio
import pytest

import lockkit
from lockkit import LockLostError

pytestmark = [pytest.mark.redis, pytest.mark.fault]


async def test_loss_reaches_the_caller_at_the_safe_deadline(servers) -> None:
    """Redis frozen (SIGSTOP) under a ttl=1 holder: the body is cancelled at the safe
    deadline and LockLostError arrives then, not when the release to the frozen server
    gives up (the command timeout, 5 s)."""
    server = servers.redis()
    async with lockkit.connect(server.url, timeout=5) as locks:
        frozen_at = 0.0
        with pytest.raises(LockLostError):
            try:
                async with locks.lock("frozen", ttl=1):
                    server.pause()
                    frozen_at = time.monotonic()
                    await anyio.sleep(30)
            finally:
                told = time.monotonic() - frozen_at
        server.resume()
        assert told < 1.5, f"LockLostError came {told:.2f}s after the freeze of a 1 s lease"
        assert locks.held_count == 0
        with anyio.fail_after(10):  # the background release finishes once Redis is back
            while not (await locks.inspect("frozen")).idle:  # noqa: ASYNC110
                await anyio.sleep(0.05)
