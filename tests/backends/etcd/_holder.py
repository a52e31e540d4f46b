"""A lock holder in a process of its own, for the frozen-holder test.

    python -m tests.backends.etcd._holder URL NAME LEASE_TTL

Prints ``held <token> <owner>`` once it holds NAME (lock ttl 60 s, far longer than the
lease), then sleeps in the body; prints ``lost <reason>`` when LockLostError ends it.
"""

from __future__ import annotations

import sys

import anyio

import lockkit


async def main(url: str, name: str, lease_ttl: int) -> None:
    async with lockkit.connect(url, lease_ttl=lease_ttl) as locks:
        try:
            async with locks.lock(name, ttl=60, timeout=10) as token:
                print(f"held {int(token)} {token.owner}", flush=True)
                await anyio.sleep(600)
        except lockkit.LockLostError as exc:
            print(f"lost {exc.reason}", flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
