"""A waiter in a process of its own, for the CLI tests.

    python -m tests.cli._waiter URL NAME

Waits for NAME (ttl 30 s, no timeout), prints ``held <token>`` once it holds it and
keeps it until its stdin closes.
"""

from __future__ import annotations

import sys

import anyio

import lockkit


async def main(url: str, name: str) -> None:
    async with lockkit.connect(url) as locks:
        async with locks.lock(name, ttl=30) as token:
            print(f"held {int(token)}", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.read)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
