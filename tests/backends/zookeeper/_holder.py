"""A lock holder in a process of its own, for the session-expiry test.

    python -m tests.backends.zookeeper._holder URL NAME SESSION_TIMEOUT

Prints ``held <token> <owner>`` once it holds NAME (ttl 60 s, far longer than the
session), then sleeps in the body; prints ``lost <reason>`` when LockLostError ends it.
"""

from __future__ import annotations

import sys

import anyio

import lockkit


async def main(url: str, name: str, session_timeout: float) -> None:
    async with lockkit.connect(url, session_timeout=session_timeout) as locks:
        try:
            async with locks.lock(name, ttl=60, timeout=10) as token:
                print(f"held {int(token)} {token.owner}", flush=True)
                await anyio.sleep(600)
        except lockkit.LockLostError as exc:
            print(f"lost {exc.reason}", flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]))
