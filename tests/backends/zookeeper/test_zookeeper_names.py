"""Lock names on the server: none escapes its parent, none collides with another."""

from __future__ import annotations

import uuid

import pytest

import lockkit
from lockkit import ConfigurationError
from lockkit._drivers.zookeeper import encode_name
from lockkit.backends.zookeeper import ZooKeeperBackend

from .helpers import children, raw_client

pytestmark = pytest.mark.zookeeper

TRICKY = ["a", "a/b", "a%2Fb", "..", ".", "../x", "/", "//", "a//b", "zookeeper", "é", "%"]


def test_every_name_is_one_segment_and_no_two_meet() -> None:
    encoded = [encode_name(n, at_top=True) for n in TRICKY]
    assert len(set(encoded)) == len(TRICKY)
    for segment in encoded:
        assert "/" not in segment and segment not in ("", ".", "..", "zookeeper")
    backend = ZooKeeperBackend.from_url(lockkit.parse_url("zk://h/app"), root="/locks")
    assert backend.path("task") == "/locks/task"
    assert backend.path("a/b") == "/locks/a%2Fb"
    assert backend.path("..") == "/locks/%2E."


@pytest.mark.parametrize("root", ["locks", "/a/../b", "/a//b", "/./a"])
def test_a_root_that_could_escape_is_refused(root: str) -> None:
    with pytest.raises(ConfigurationError, match="root"):
        ZooKeeperBackend.from_url(lockkit.parse_url("zk://h"), root=root)


async def test_tricky_names_are_separate_locks_below_the_root(zookeeper_server) -> None:
    """``a`` and ``a/b`` (and ``..``, ``/``...) are held at once by one client; on the
    server each is one directory right below the root, and nothing else appeared."""
    root = f"/names-{uuid.uuid4().hex[:8]}"
    async with lockkit.connect(zookeeper_server.url, root=root) as locks:
        objects = [locks.lock(n, ttl=30, timeout=0) for n in TRICKY]
        held = [await lock.acquire() for lock in objects]
        for n, token in zip(TRICKY, held, strict=True):
            info = await locks.inspect(n)
            assert info.holder is not None and info.holder.owner == token.owner
        async with raw_client(zookeeper_server.hosts) as raw:
            below = await children(raw, root)
            assert sorted(below) == sorted(encode_name(n) for n in TRICKY)
            for segment in below:  # each directory holds just its lock's node
                assert len(await children(raw, f"{root}/{segment}")) == 1
        for lock in objects:
            await lock.release()


async def test_a_chroot_keeps_every_node_below_it(zookeeper_server) -> None:
    chroot = f"/app-{uuid.uuid4().hex[:8]}"
    async with lockkit.connect(zookeeper_server.url + chroot) as locks:
        async with locks.lock("../../escape", ttl=30):
            async with raw_client(zookeeper_server.hosts) as raw:
                assert await children(raw, chroot + "/lockkit") == ["..%2F..%2Fescape"]
