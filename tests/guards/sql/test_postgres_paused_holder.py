"""End to end: a Redis lock and PostgresGuard, the first holder in another process frozen
past its lease. The second holder's write stands; the first one's, when it wakes up and
writes, is refused by PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import anyio
import pytest

import lockkit
from lockkit.guards.sql import PostgresGuard

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.fault]

HOLDER = """
import sys, anyio, lockkit
from lockkit.guards.sql import PostgresGuard

async def main(lock_url, guard_url, name, resource):
    async with lockkit.connect(lock_url) as locks, PostgresGuard(guard_url) as guard:
        try:
            async with locks.lock(name, ttl=1.0, on_lost="raise") as token:
                await guard.write(resource, "written by the first holder", token=token)
                print("TOKEN", int(token), flush=True)
                await anyio.sleep(1.5)  # frozen in here, then it carries on as if nothing was
                try:
                    await guard.write(resource, "late write from the paused holder", token=token)
                except lockkit.StaleTokenError as exc:
                    print("REFUSED", int(exc.offered), exc.current, flush=True)
                else:
                    print("ACCEPTED", flush=True)
        except lockkit.LockLostError:
            print("LOST", flush=True)

anyio.run(main, *sys.argv[1:5])
"""


async def test_paused_holder_write_refused_by_postgres(redis_server, postgres_server) -> None:
    name = "paused-sql:" + uuid.uuid4().hex[:6]
    resource = f"stock:{uuid.uuid4().hex[:6]}"
    child = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
        [sys.executable, "-c", HOLDER, redis_server.url, postgres_server.url, name, resource],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        with anyio.fail_after(20):
            kind, value = (await anyio.to_thread.run_sync(child.stdout.readline)).split()
        assert kind == "TOKEN"
        os.kill(child.pid, signal.SIGSTOP)
        started = time.monotonic()
        async with (
            lockkit.connect(redis_server.url) as locks,
            PostgresGuard(postgres_server.url) as guard,
        ):
            async with locks.lock(name, ttl=10, timeout=10) as new:
                assert int(new) > int(value)
                assert time.monotonic() - started < 3
                await guard.write(resource, "written by the second holder", token=new)
                os.kill(child.pid, signal.SIGCONT)
                lines = (await anyio.to_thread.run_sync(child.communicate, None, 20))[0]
            refused = next(line for line in lines.splitlines() if line.startswith("REFUSED"))
            assert refused.split()[1:] == [value, str(int(new))], lines
            assert "ACCEPTED" not in lines
            assert await guard.read(resource) == "written by the second holder"
            fence = await guard.fence(resource)
            assert fence is not None and fence.token == int(new) and fence.owner == new.owner
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
        child.wait()
