"""ZooKeeperGuard on a real server: the layout other clients see, the caller's own
operations in the fence's multi, the application's client, and a frozen lock holder
whose late write is refused."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator

import aiozk
import anyio
import anyio.abc
import pytest

import lockkit
from lockkit import FencingToken, StaleTokenError
from lockkit.guards import RAW
from lockkit.guards.zookeeper import (
    Check,
    Create,
    Delete,
    SetData,
    ZooKeeperGuard,
    ZooKeeperOpFailed,
)
from tests.backends.zookeeper.helpers import children, raw_client

pytestmark = pytest.mark.zookeeper


def _token(value: int, owner: str = "a", lock: str = "orders") -> FencingToken:
    return FencingToken(value, name=lock, backend="zookeeper", owner=owner)


@pytest.fixture
async def guard(zookeeper_server) -> AsyncIterator[ZooKeeperGuard[object]]:
    async with ZooKeeperGuard.from_url(zookeeper_server.url) as guard:
        yield guard


@pytest.fixture
async def raw(zookeeper_server) -> AsyncIterator[aiozk.ZKClient]:
    async with raw_client(zookeeper_server.hosts) as client:
        yield client


async def test_layout_a_fence_node_and_the_value_as_it_is(guard, raw) -> None:
    """The fence record sits on ``{root}/{resource}``, the codec's bytes on its child
    ``value``; versions are the value node's data version + 1; a name with ``/`` is one
    node."""
    resource = f"orders/{uuid.uuid4().hex[:6]}"
    await guard.write(resource, {"qty": 1}, token=_token(3))
    await guard.write(resource, {"qty": 2}, token=_token(3))
    path = guard.path(resource)
    assert path == "/lockkit-guards/orders%2F" + resource[7:]
    data, stat = await raw.get_data(path + "/value"), await raw.exists(path + "/value")
    assert data == b'{"qty":2}' and stat
    stored = await guard.read_versioned(resource)
    assert stored is not None and stored.version == 2 and stored.value == {"qty": 2}
    record = await raw.get_data(path)
    assert b'"token":3' in record and b'"lock":"orders"' in record


async def test_check_leaves_the_value_version_alone(guard) -> None:
    resource = f"checked-{uuid.uuid4().hex[:6]}"
    await guard.write(resource, "v", token=_token(1))
    await guard.check(resource, token=_token(2))
    await guard.check(resource, token=_token(3))
    stored = await guard.read_versioned(resource)
    assert stored is not None and stored.version == 1
    await guard.write(resource, "w", token=_token(3), expect_version=1)


async def test_own_operations_apply_with_the_fence_or_not_at_all(guard, raw) -> None:
    """Extra operations ride in the fence's multi: all applied with a good token, none
    with a stale one, none when one of them fails (and the fence stays put)."""
    base = f"/app-{uuid.uuid4().hex[:6]}"
    await raw.create(base)
    await raw.create(f"{base}/stock", data=b"10")
    resource = "stock"
    done = await guard.multi(
        resource,
        [Check(f"{base}/stock", 0), SetData(f"{base}/stock", b"9"), Create(f"{base}/order-1")],
        token=_token(5),
    )
    assert done == [None, 1, f"{base}/order-1"]
    assert await raw.get_data(f"{base}/stock") == b"9"

    with pytest.raises(StaleTokenError):
        await guard.multi(resource, [SetData(f"{base}/stock", b"0")], token=_token(4))
    assert await raw.get_data(f"{base}/stock") == b"9"

    with pytest.raises(ZooKeeperOpFailed) as caught:
        await guard.multi(
            resource,
            [SetData(f"{base}/stock", b"8"), Delete(f"{base}/missing")],
            token=_token(6),
        )
    assert (caught.value.index, caught.value.error) == (1, "NoNode")
    assert await raw.get_data(f"{base}/stock") == b"9"
    fence = await guard.fence(resource)
    assert fence is not None and fence.token == 5, "a failed multi raised the fence"


async def test_the_applications_client_is_used_and_left_open(zookeeper_server) -> None:
    async with raw_client(zookeeper_server.hosts) as client:
        resource = f"app-{uuid.uuid4().hex[:6]}"
        async with ZooKeeperGuard.from_client(client, codec=RAW, root="/app-guards") as guard:
            await guard.write(resource, b"\x00\x01", token=_token(1))
            assert await guard.read(resource) == b"\x00\x01"
        assert await client.get_data(f"/app-guards/{resource}/value") == b"\x00\x01"


def test_credentials_stay_out_of_the_repr() -> None:
    guard = ZooKeeperGuard.from_url("zookeeper://user:s3cret@localhost:2181/chroot")
    assert "s3cret" not in repr(guard) and "user" not in repr(guard)
    with pytest.raises(lockkit.ConfigurationError):
        ZooKeeperGuard.from_url("zookeeper://localhost?tls=1")
    with pytest.raises(lockkit.ConfigurationError):
        ZooKeeperGuard.from_url("redis://localhost")


async def _line(process: anyio.abc.Process, timeout: float) -> str:
    assert process.stdout is not None
    data = b""
    with anyio.fail_after(timeout):
        while not data.endswith(b"\n"):
            data += await process.stdout.receive(1)
    return data.decode().strip()


@pytest.mark.fault
async def test_a_frozen_holders_late_write_is_refused_in_zookeeper(zookeeper_server) -> None:
    """Holder A (another process, 2 s session) writes through the guard, then is frozen
    (SIGSTOP) until the server deletes its lock node. B acquires with a higher token and
    writes. A resumes and writes at once with its old token: ZooKeeper refuses it, B's
    value and fence stay."""
    name, resource = f"zombie-{uuid.uuid4().hex[:8]}", f"account-{uuid.uuid4().hex[:8]}"
    url = zookeeper_server.url
    holder = ("tests.guards._holder", f"{url}?session_timeout=2", url, name, resource)
    process = await anyio.open_process([sys.executable, "-m", *holder])
    try:
        async with ZooKeeperGuard.from_url(url) as guard:
            word, value, owner = (await _line(process, 30)).split()
            assert word == "held"
            old = FencingToken(int(value), name=name, backend="zookeeper", owner=owner)
            assert await guard.read(resource) == "a-1"
            os.kill(process.pid, signal.SIGSTOP)
            async with raw_client(zookeeper_server.hosts) as raw:
                with anyio.fail_after(15):
                    while await children(raw, "/lockkit/" + name):  # noqa: ASYNC110
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
