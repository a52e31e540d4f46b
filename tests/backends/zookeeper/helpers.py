"""Helpers of the ZooKeeper backend tests: a raw aiozk client to look at the tree."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiozk
from aiozk import exc


@contextlib.asynccontextmanager
async def raw_client(hosts: str, **kwargs: object) -> AsyncIterator[aiozk.ZKClient]:
    """An aiozk client of the test's own, to look at (and meddle with) the tree."""
    client = aiozk.ZKClient(hosts, **kwargs)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def children(client: aiozk.ZKClient, path: str) -> list[str]:
    """The children of ``path``; none if it does not exist."""
    try:
        return sorted(await client.get_children(path))
    except exc.NoNode:
        return []
