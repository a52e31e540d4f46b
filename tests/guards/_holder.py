"""A lock holder that writes through a storage guard, in a process of its own, for the
paused-holder tests of the storage guards.

    python -m tests.guards._holder LOCK_URL GUARD_URL NAME RESOURCE

Holds NAME (lock ttl 60 s, ``on_lost="raise"`` so a loss does not stop the body), writes
``a-1`` to RESOURCE through the guard for GUARD_URL's scheme and prints ``held <token>
<owner>``. Then it waits for a line on stdin and writes ``a-late`` with the same token
at once, whether or not its client noticed a loss meanwhile (as a process resumed in
the middle of its work does), and prints ``accepted`` or ``refused <offered> <current>``.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio

import lockkit
from lockkit.abc import Guard


def guard_for(url: str) -> Guard[Any]:
    if url.startswith(("etcd://", "etcds://")):
        from lockkit.guards.etcd import EtcdGuard

        return EtcdGuard.from_url(url)
    from lockkit.guards.zookeeper import ZooKeeperGuard

    return ZooKeeperGuard.from_url(url)


async def main(lock_url: str, guard_url: str, name: str, resource: str) -> None:
    async with lockkit.connect(lock_url) as locks, guard_for(guard_url) as guard:
        try:
            async with locks.lock(name, ttl=60, timeout=10, on_lost="raise") as token:
                await guard.write(resource, "a-1", token=token)
                print(f"held {int(token)} {token.owner}", flush=True)
                await anyio.to_thread.run_sync(sys.stdin.readline)
                try:
                    await guard.write(resource, "a-late", token=token)
                except lockkit.StaleTokenError as exc:
                    print(f"refused {int(exc.offered)} {exc.current}", flush=True)
                else:
                    print("accepted", flush=True)
        except lockkit.LockLostError:
            pass


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4])
