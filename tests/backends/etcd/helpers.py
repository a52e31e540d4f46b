"""Helpers of the etcd backend tests: what the server stores, seen through etcdctl."""

from __future__ import annotations

import anyio

from tests.servers import etcdctl


async def keys_under(endpoints: list[str], prefix: str) -> list[str]:
    """Every key starting with ``prefix`` (a linearizable read)."""
    out = await anyio.to_thread.run_sync(
        lambda: etcdctl(endpoints, "get", "--prefix", "--keys-only", prefix)
    )
    return [line for line in out.splitlines() if line]


async def leases(endpoints: list[str]) -> set[int]:
    """The ids of every lease the cluster holds."""
    out = await anyio.to_thread.run_sync(lambda: etcdctl(endpoints, "lease", "list"))
    return {int(line, 16) for line in out.splitlines()[1:] if line.strip()}
