"""What lockkit does differently from etcetra 0.1.19's helpers, each shown on a server.

Each test fails if lockkit fell back to etcetra's behaviour: a prefix range that also
covers ``locks/ab/`` for ``locks/a/``, serializable reads answered by a member without
a quorum, a keep-alive that stops once the lock is granted, a lease per lock.
"""

from __future__ import annotations

import uuid

import anyio
import pytest
from etcetra.client import EtcdClient, EtcdRequestGenerator
from etcetra.errors import EtcetraError
from etcetra.types import HostPortPair

import lockkit
from lockkit._drivers.etcd import lock_prefix, prefix_end
from lockkit.backends.etcd import EtcdBackend

from .helpers import keys_under, leases

pytestmark = pytest.mark.etcd


def test_prefix_ranges_end_right_after_the_prefix() -> None:
    """``locks/a/`` ends at ``locks/a0``; etcetra's helper ends it at ``locks/b/``."""
    assert prefix_end(b"locks/a/") == b"locks/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert EtcdRequestGenerator.get_prefix("locks/a/").range_end == b"locks/b/"  # its defect
    a, ab = lock_prefix("locks", "a"), lock_prefix("locks", "a/b")
    assert a == b"locks/a/" and ab == b"locks/a%2Fb/"
    assert not a <= ab < prefix_end(a)
    assert not a <= lock_prefix("locks", "ab") < prefix_end(a)


async def test_a_lock_does_not_see_the_keys_of_a_longer_name(etcd_server) -> None:
    """``ab`` held does not make ``a`` look held (a prefix range ending at ``…/b/``
    would cover ``…/ab/``)."""
    base = f"pfx-{uuid.uuid4().hex[:8]}"
    async with lockkit.connect(etcd_server.url) as locks:
        async with locks.lock(base + "b", ttl=10), locks.lock(base + "/x", ttl=10):
            assert (await locks.inspect(base)).idle
            async with locks.lock(base, ttl=10, timeout=0):
                info = await locks.inspect(base + "b")
                assert info.holder is not None and info.waiters == 0


@pytest.mark.fault
@pytest.mark.cluster
async def test_ownership_checks_need_a_quorum(etcd_cluster) -> None:
    """A member cut off from its quorum (the two others killed) still answers a
    serializable read from its own state, as etcetra's ``get`` asks; lockkit's renewal
    reads are linearizable, so the holder cannot confirm its lock there: extend raises
    BackendUnavailable instead of renewing a lock the cluster may have given away."""
    name = f"quorum-{uuid.uuid4().hex[:8]}"
    survivor = etcd_cluster.nodes[0]
    url = f"etcd://{survivor.hostport}"
    async with lockkit.connect(url, timeout=1) as locks:
        lock = locks.lock(name, ttl=30)
        await lock.acquire()
        for node in etcd_cluster.nodes[1:]:
            await anyio.to_thread.run_sync(node.kill)
        async with EtcdClient(HostPortPair(survivor.host, survivor.port)).connect() as raw:
            key = (await keys_under_raw(raw, f"lockkit/{name}/"))[0]
            assert key.startswith(f"lockkit/{name}/")  # a serializable read still answers
        with pytest.raises(lockkit.BackendUnavailable):
            await lock.extend()


async def keys_under_raw(raw: object, prefix: str) -> list[str]:
    keys = await raw.keys_prefix(prefix)  # type: ignore[attr-defined]
    return list(keys)


async def test_the_lease_is_kept_alive_while_the_lock_is_held(etcd_server) -> None:
    """With a 2 s lease, a lock held for 5 s keeps its key and is not lost (etcetra's
    ``with_lock(ttl=2)`` stops its keep-alive once granted: its key is gone by then)."""
    name = f"keepalive-{uuid.uuid4().hex[:8]}"
    async with lockkit.connect(etcd_server.url, lease_ttl=2) as locks:
        async with locks.lock(name, ttl=30) as token:
            await anyio.sleep(5)
            assert len(await keys_under(etcd_server.endpoints, f"lockkit/{name}/")) == 1
            info = await locks.inspect(name)
            assert info.holder is not None and info.holder.owner == token.owner


async def test_etcetra_with_lock_lets_its_lease_expire(etcd_server) -> None:
    """The defect itself, for the record: inside etcetra's ``with_lock(ttl=2)`` the lock
    key disappears after about 2 s (and leaving fails: the lease is gone)."""
    name = f"etcetra-{uuid.uuid4().hex[:8]}"
    client = EtcdClient(HostPortPair(etcd_server.host, etcd_server.port))
    with pytest.raises(EtcetraError, match="lease not found"):
        async with client.with_lock(name, ttl=2):
            assert len(await keys_under(etcd_server.endpoints, name + "/")) == 1
            await anyio.sleep(4.5)
            assert await keys_under(etcd_server.endpoints, name + "/") == []


async def test_one_lease_per_client_whatever_the_locks(etcd_server) -> None:
    """200 acquisitions over 20 names add one lease (the client's) and revoke it at
    close; nothing is granted per lock, so nothing is orphaned (etcetra's lock RPC with
    lease 0 leaves a 60 s lease per lock)."""
    before = await leases(etcd_server.endpoints)
    async with lockkit.connect(etcd_server.url) as locks:
        backend = locks.backend
        assert isinstance(backend, EtcdBackend)
        for i in range(200):
            async with locks.lock(f"one-lease-{i % 20}", ttl=10):
                pass
        assert await leases(etcd_server.endpoints) - before == {backend.lease_id}
    assert await leases(etcd_server.endpoints) - before == set()
