"""Redlock configuration and the shapes it can be built from, on the shared masters."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

import lockkit
from lockkit import ConfigurationError, LockClient
from lockkit.backends.redlock import RedlockBackend
from tests.servers.redis import RedisMasters, RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.redlock]


def fence_of(node: RedisServer, name: str) -> int:
    """The token register of lock ``name`` on one master."""
    value = node.call("GET", f"lockkit:{{{name}}}:f")
    assert isinstance(value, bytes | str), value
    return int(value)


def _name() -> str:
    return f"rl-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize(
    "url", ["redlock://127.0.0.1:1", "redlock://127.0.0.1:1,127.0.0.1:2", "redlock://"]
)
def test_fewer_than_three_masters_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="at least 3"):
        lockkit.connect(url)


def test_the_quorum_is_a_majority_of_the_configured_masters() -> None:
    hosts = [f"127.0.0.1:{7000 + i}" for i in range(7)]
    for count, quorum in ((3, 2), (4, 3), (5, 3), (7, 4)):
        backend = RedlockBackend.from_url(lockkit.parse_url("redlock://" + ",".join(hosts[:count])))
        assert backend.quorum == quorum


def test_options_and_urls_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="drift_factor"):
        lockkit.connect("redlock://a,b,c?drift_factor=2")
    with pytest.raises(ConfigurationError, match="one redis"):
        RedlockBackend.from_urls(["redis://a", "redis://b", "etcd://c"])
    with pytest.raises(ConfigurationError, match=r"redis\.asyncio\.Redis"):
        RedlockBackend.from_clients([object(), object(), object()])  # type: ignore[list-item]
    backend = RedlockBackend.from_url(lockkit.parse_url("redlock://u:secret@a,b:6380,c/2"))
    assert "secret" not in repr(backend)
    assert repr(backend) == "<RedlockBackend a:6379/2,b:6380/2,c:6379/2>"


async def test_url_hosts_share_one_lock(redis_masters: RedisMasters) -> None:
    name = _name()
    async with lockkit.connect(redis_masters.url) as a, lockkit.connect(redis_masters.url) as b:
        async with a.lock(name, ttl=5) as token:
            assert token.backend == "redlock"
            info = await b.inspect(name)
            assert info.holder is not None and info.holder.owner == token.owner
            assert info.holder.token == int(token)
        # every master holds the lock's state, and gives it up
        for node in redis_masters.nodes:
            assert node.call("EXISTS", f"lockkit:{{{name}}}:o") == 0
            assert node.call("EXISTS", f"lockkit:{{{name}}}:f") == 1


async def test_application_clients_and_per_master_urls(redis_masters: RedisMasters) -> None:
    """from_clients() (the application's pools, left open) and from_urls() (one URL per
    master) reach the same locks as a redlock:// URL."""
    name = _name()
    clients = [Redis.from_url(url) for url in redis_masters.urls]
    try:
        backend = RedlockBackend.from_clients(clients)
        async with LockClient(backend) as app, lockkit.connect(redis_masters.url) as other:
            lock = app.lock(name, ttl=5)
            token = await lock.acquire()
            with pytest.raises(lockkit.LockTimeout):
                await other.lock(name, timeout=0).acquire()
            await lock.release()
            async with LockClient(RedlockBackend.from_urls(redis_masters.urls)) as by_urls:
                async with by_urls.lock(name, ttl=5, timeout=5) as later:
                    assert int(later) > int(token)
        for c in clients:
            assert await c.ping()  # still open: lockkit never closes them
    finally:
        for c in clients:
            await c.aclose()


async def test_per_master_credentials(redis_masters: RedisMasters) -> None:
    """Each master can have its own login (from_urls); a refused one fails on entering."""
    node = redis_masters.nodes[0]
    user = f"rl{uuid.uuid4().hex[:6]}"
    node.call("ACL", "SETUSER", user, "on", ">s3cret", "~*", "&*", "+@all")
    try:
        urls = list(redis_masters.urls)
        urls[0] = f"redis://{user}:s3cret@{node.hostport}/0"
        async with LockClient(RedlockBackend.from_urls(urls)) as locks:
            async with locks.lock(_name(), ttl=5):
                pass
        urls[0] = f"redis://{user}:wrong@{node.hostport}/0"
        with pytest.raises(ConfigurationError, match="refused the credentials"):
            async with LockClient(RedlockBackend.from_urls(urls)):
                pass
    finally:
        node.call("ACL", "DELUSER", user)


async def test_one_round_when_the_proposal_wins(redis_masters: RedisMasters) -> None:
    """An uncontended acquire is one round (one script per master) when this client's
    floor is above every master's register; a floor that loses costs the write-back."""
    name = _name()
    async with lockkit.connect(redis_masters.url) as locks:
        backend = locks.backend
        assert isinstance(backend, RedlockBackend)
        lock = locks.lock(name, ttl=5)
        await lock.acquire()
        await lock.release()
        before = dict(backend.statistics().requests)
        first = await lock.acquire()
        after = dict(backend.statistics().requests)
        assert after.get("acquire", 0) - before.get("acquire", 0) == 5
        assert after.get("fence", 0) == before.get("fence", 0)
        await lock.release()
        # a master ahead of the others (as after an earlier holder whose write-back
        # reached only some): the others must be brought up to it before the grant
        ahead = int(first) + 1_000_000_000
        redis_masters.nodes[2].call("SET", f"lockkit:{{{name}}}:f", ahead)
        token = await lock.acquire()
        assert int(token) == ahead + 1
        assert dict(backend.statistics().requests).get("fence", 0) > after.get("fence", 0)
        for node in redis_masters.nodes:  # the register now carries it everywhere
            assert fence_of(node, name) == int(token)
        await lock.release()
