"""EtcdGuard on a real member: the layout etcdctl sees, the caller's own compares and
operations in the fence's Txn, the lock key's create revision (IsOwner), the
application's etcetra connection, and a frozen lock holder whose late write is refused."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import pytest
from etcetra.client import EtcdClient
from etcetra.types import HostPortPair

import lockkit
from lockkit import FencingToken, StaleTokenError
from lockkit.backends.etcd import EtcdBackend
from lockkit.guards import TEXT
from lockkit.guards.etcd import (
    EtcdCompareFailed,
    EtcdGuard,
    delete,
    get,
    put,
    value_is,
    version_is,
)
from tests.backends.etcd.helpers import keys_under
from tests.servers import etcdctl

pytestmark = pytest.mark.etcd


def _token(value: int, owner: str = "a", lock: str = "orders") -> FencingToken:
    return FencingToken(value, name=lock, backend="etcd", owner=owner)


@pytest.fixture
async def guard(etcd_server) -> AsyncIterator[EtcdGuard[object]]:
    async with EtcdGuard.from_url(etcd_server.url) as guard:
        yield guard


async def test_layout_a_fence_key_and_the_value_as_it_is(guard, etcd_server) -> None:
    """``{root}/{R}/fence`` holds the record, ``{root}/{R}/value`` the codec's bytes;
    versions are etcd's versions of the value key; check() leaves them alone."""
    resource = f"orders/{uuid.uuid4().hex[:6]}"
    await guard.write(resource, {"qty": 1}, token=_token(3))
    await guard.check(resource, token=_token(4))
    await guard.write(resource, {"qty": 2}, token=_token(4))
    prefix = guard.prefix(resource).decode()
    assert prefix == f"lockkit-guards/orders%2F{resource[7:]}/"
    assert await keys_under(etcd_server.endpoints, prefix) == [prefix + "fence", prefix + "value"]
    value = await anyio.to_thread.run_sync(
        lambda: etcdctl(etcd_server.endpoints, "get", "--print-value-only", prefix + "value")
    )
    assert value.strip() == '{"qty":2}'
    stored = await guard.read_versioned(resource)
    assert stored is not None and (stored.value, stored.version) == ({"qty": 2}, 2)


async def test_own_operations_apply_with_the_fence_or_not_at_all(guard, etcd_server) -> None:
    """The caller's compares and operations ride in the fence's Txn: all applied with a
    good token, none with a stale one, none when a compare of theirs fails (and the
    fence stays put)."""
    base = f"app-{uuid.uuid4().hex[:6]}"
    await anyio.to_thread.run_sync(
        lambda: etcdctl(etcd_server.endpoints, "put", f"{base}/stock", "10")
    )
    resource = "stock"
    replies = await guard.txn(
        resource,
        [put(f"{base}/stock", b"9"), put(f"{base}/order-1", b"sku"), get(f"{base}/stock")],
        compare=[value_is(f"{base}/stock", b"10"), version_is(f"{base}/order-1", 0)],
        token=_token(5),
    )
    assert len(replies) == 3 and replies[2].response_range.kvs[0].value == b"9"
    keys = await keys_under(etcd_server.endpoints, f"{base}/")
    assert keys == [f"{base}/order-1", f"{base}/stock"]

    with pytest.raises(StaleTokenError):
        await guard.txn(resource, [delete(f"{base}/stock")], token=_token(4))
    with pytest.raises(EtcdCompareFailed):
        await guard.txn(
            resource,
            [delete(f"{base}/stock")],
            compare=[value_is(f"{base}/stock", b"10")],  # it is 9 now
            token=_token(6),
        )
    assert await keys_under(etcd_server.endpoints, f"{base}/") == keys
    fence = await guard.fence(resource)
    assert fence is not None and fence.token == 5, "a failed Txn raised the fence"


async def test_a_holder_whose_lock_key_is_gone_is_refused(guard, etcd_server) -> None:
    """With ``lock_key``, a write needs the holder's key to exist at the token's
    revision: accepted while held, refused once the key is gone, even though no newer
    token wrote meanwhile (Go's IsOwner)."""
    name, resource = f"owner-{uuid.uuid4().hex[:6]}", f"acct-{uuid.uuid4().hex[:6]}"
    async with lockkit.connect(etcd_server.url) as locks:
        backend = locks.backend
        assert isinstance(backend, EtcdBackend) and backend.lease_id is not None
        key = backend.prefix(name) + f"{backend.lease_id:x}".encode()
        async with locks.lock(name) as token:
            await guard.write(resource, "held", token=token, lock_key=key)
        with pytest.raises(StaleTokenError, match="no longer exists"):
            await guard.write(resource, "after", token=token, lock_key=key)
        await guard.write(resource, "without", token=token)  # the fence alone allows it
    assert await guard.read(resource) == "without"


async def test_the_applications_connection_is_used_and_left_open(etcd_server) -> None:
    resource = f"app-{uuid.uuid4().hex[:6]}"
    client = EtcdClient(HostPortPair(etcd_server.host, etcd_server.port))
    async with client.connect() as communicator:
        async with EtcdGuard.from_client(communicator, codec=TEXT, root="app") as guard:
            await guard.write(resource, "v", token=_token(1))
        assert await communicator.get(f"app/{resource}/value") == "v"


def test_credentials_stay_out_of_the_repr() -> None:
    guard = EtcdGuard.from_url("etcd://user:s3cret@localhost:2379")
    assert "s3cret" not in repr(guard) and "user" not in repr(guard)
    with pytest.raises(lockkit.ConfigurationError):
        EtcdGuard.from_url("etcd://localhost?ssl_ca_certs=/x.pem")
    with pytest.raises(lockkit.ConfigurationError):
        EtcdGuard.from_url("zookeeper://localhost")


async def _line(process: anyio.abc.Process, timeout: float) -> str:
    assert process.stdout is not None
    data = b""
    with anyio.fail_after(timeout):
        while not data.endswith(b"\n"):
            data += await process.stdout.receive(1)
    return data.decode().strip()


@pytest.mark.fault
async def test_a_frozen_holders_late_write_is_refused_in_etcd(etcd_server) -> None:
    """Holder A (another process, 2 s lease) writes through the guard, then is frozen
    (SIGSTOP) until etcd deletes its lock key. B acquires with a higher token and
    writes. A resumes and writes at once with its old token: etcd refuses it, B's value
    and fence stay."""
    name, resource = f"zombie-{uuid.uuid4().hex[:8]}", f"account-{uuid.uuid4().hex[:8]}"
    url = etcd_server.url
    holder = ("tests.guards._holder", f"{url}?lease_ttl=2", url, name, resource)
    process = await anyio.open_process([sys.executable, "-m", *holder])
    try:
        async with EtcdGuard.from_url(url) as guard:
            word, value, owner = (await _line(process, 30)).split()
            assert word == "held"
            old = FencingToken(int(value), name=name, backend="etcd", owner=owner)
            assert await guard.read(resource) == "a-1"
            os.kill(process.pid, signal.SIGSTOP)
            with anyio.fail_after(15):
                while await keys_under(etcd_server.endpoints, f"lockkit/{name}/"):  # noqa: ASYNC110
                    await anyio.sleep(0.1)
            async with lockkit.connect(url) as locks, locks.lock(name, timeout=5) as new:
                assert int(new) > int(old)
                await guard.write(resource, "b-1", token=new)
                os.kill(process.pid, signal.SIGCONT)
                assert process.stdin is not None
                await process.stdin.send(b"write\n")
                assert await _line(process, 15) == f"refused {int(old)} {int(new)}"
                assert await guard.read(resource) == "b-1"
                fence = await guard.fence(resource)
                assert fence is not None and (fence.token, fence.owner) == (int(new), new.owner)
        with anyio.fail_after(15):
            assert await process.wait() == 0
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
            await process.wait()
            await process.aclose()
