"""What the Redis guard does beyond the conformance suite: its layout, the caller's own
mutations under the fence, the application's client, Cluster slots, credentials, and a
paused lock holder fenced by Redis itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AppCluster
from redis.crc import key_slot

import lockkit
from lockkit import ConfigurationError, FencingToken, StaleTokenError, WriteConflictError
from lockkit.guards import RAW, TEXT
from lockkit.guards.redis import GuardedCommandError, RedisGuard
from lockkit.testing import check_guard

pytestmark = pytest.mark.redis


def tok(value: int, owner: str = "a", lock: str = "orders") -> FencingToken:
    return FencingToken(value, name=lock, backend="redis", owner=owner)


def name(what: str = "r") -> str:
    return f"{what}:{uuid.uuid4().hex[:8]}"


def text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


@pytest.fixture
async def app(redis_server: Any) -> Any:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


# -- layout and values ------------------------------------------------------------------


async def test_one_hash_per_resource_holds_value_version_and_fence(redis_server, app) -> None:
    resource = name("order")
    async with RedisGuard.from_url(redis_server.url) as guard:
        await guard.write(resource, {"state": "new"}, token=tok(7))
        assert guard.key(resource) == f"lockkit:guard:{{{resource}}}"
        stored = await app.hgetall(guard.key(resource))
    assert {text(k): text(v) for k, v in stored.items()} == {
        "value": '{"state":"new"}',
        "version": "1",
        "token": "7",
        "owner": "a",
        "lock": "orders",
        "backend": "redis",
    }
    assert await app.ttl(guard.key(resource)) == -1, "a fence must not expire"


async def test_braces_and_percent_in_names_get_their_own_keys(redis_server) -> None:
    async with RedisGuard.from_url(redis_server.url, prefix="p:") as guard:
        assert guard.key("{a}") == "p:{%7Ba%7D}"
        assert guard.key("%7Ba%7D") == "p:{%257Ba%257D}"
        await guard.write("{a}", 1, token=tok(1))
        assert await guard.read("%7Ba%7D") is None


async def test_codecs(redis_server) -> None:
    resource = name()
    async with RedisGuard.from_url(redis_server.url, codec=RAW) as raw:
        await raw.write(resource, b"\x00\xff", token=tok(1))
        assert await raw.read(resource) == b"\x00\xff"
    async with RedisGuard.from_url(redis_server.url, codec=TEXT) as textual:
        await textual.write(resource, "été", token=tok(2))
        assert await textual.read_versioned(resource) == lockkit.abc.Versioned("été", 2)


async def test_tokens_beyond_double_precision_compare_exactly(redis_server) -> None:
    """Lua numbers are doubles; 2**53 + 1 and 2**53 are one double but two tokens."""
    resource = name()
    async with RedisGuard.from_url(redis_server.url) as guard:
        await guard.write(resource, "big", token=tok(2**53 + 1))
        with pytest.raises(StaleTokenError):
            await guard.write(resource, "smaller", token=tok(2**53, owner="b"))
        await guard.write(resource, "bigger", token=tok(2**64, owner="c"))
        fence = await guard.fence(resource)
        assert fence is not None and fence.token == 2**64


async def test_conflict_changes_nothing(redis_server) -> None:
    resource = name()
    async with RedisGuard.from_url(redis_server.url) as guard:
        await guard.write(resource, 1, token=tok(1))
        with pytest.raises(WriteConflictError) as info:
            await guard.write(resource, 2, token=tok(2, owner="b"), expect_version=0)
        assert (info.value.expected, info.value.current) == (0, 1)
        fence = await guard.fence(resource)
        assert fence is not None and fence.token == 1
        with pytest.raises(ValueError):
            await guard.write(resource, 2, token=tok(2), expect_version=-1)


# -- the caller's own mutation ----------------------------------------------------------


async def test_commands_run_with_a_good_token_and_not_with_a_stale_one(redis_server, app) -> None:
    resource = name("order")
    async with RedisGuard.from_url(redis_server.url) as guard:
        replies = await guard.execute(
            resource,
            [
                ("HSET", resource, "state", "paid"),
                ("RPUSH", f"{resource}:log", "paid"),
                ("INCRBY", f"{resource}:n", 5),
                ("GET", f"{resource}:missing"),
            ],
            token=tok(10),
        )
        assert replies == [1, 1, 5, None]
        fence = await guard.fence(resource)
        assert fence is not None and (fence.token, fence.owner) == (10, "a")
        await guard.execute(resource, [("HSET", resource, "state", "shipped")], token=tok(10))
        with pytest.raises(StaleTokenError, match="newer token"):
            await guard.execute(
                resource,
                [("HSET", resource, "state", "refunded"), ("DEL", f"{resource}:log")],
                token=tok(9, owner="old"),
            )
        with pytest.raises(StaleTokenError, match="handed out a token twice"):
            await guard.execute(resource, [("DEL", resource)], token=tok(10, owner="twin"))
        with pytest.raises(StaleTokenError, match="minted for lock"):
            await guard.execute(resource, [("DEL", resource)], token=tok(99, lock="other"))
    assert text(await app.hget(resource, "state")) == "shipped"
    assert await app.lrange(f"{resource}:log", 0, -1) == [b"paid"]


async def test_a_failing_command_keeps_what_ran_before_it(redis_server, app) -> None:
    resource = name()
    async with RedisGuard.from_url(redis_server.url) as guard:
        with pytest.raises(GuardedCommandError, match="WRONGTYPE") as info:
            await guard.execute(
                resource,
                [("SET", resource, "x"), ("HSET", resource, "f", "v"), ("SET", "never", "y")],
                token=tok(3),
            )
        assert info.value.index == 1
        fence = await guard.fence(resource)
        assert fence is not None and fence.token == 3, "an accepted token is on record"
    assert await app.get(resource) == b"x"
    assert await app.get("never") is None


async def test_bad_commands_are_refused_before_anything_runs(redis_server) -> None:
    resource = name()
    async with RedisGuard.from_url(redis_server.url) as guard:
        with pytest.raises(ConfigurationError, match="does not know"):
            await guard.execute(resource, [("SET", "k", "v"), ("NOSUCH", "x")], token=tok(1))
        with pytest.raises(ConfigurationError, match="wrong number"):
            await guard.execute(resource, [("SET", "k")], token=tok(1))
        with pytest.raises(TypeError):
            await guard.execute(resource, ["SET k v"], token=tok(1))
        with pytest.raises(TypeError):
            await guard.execute(resource, [("SET", "k", None)], token=tok(1))  # type: ignore[list-item]
        assert await guard.fence(resource) is None


async def test_commands_whose_keys_move(redis_server, app) -> None:
    resource = name()
    a, b, out = f"{resource}:a", f"{resource}:b", f"{resource}:out"
    await app.zadd(a, {"x": 1})
    await app.zadd(b, {"y": 2})
    async with RedisGuard.from_url(redis_server.url) as guard:
        replies = await guard.execute(
            resource,
            [("ZUNIONSTORE", out, 2, a, b), ("XINFO", "HELP")],
            token=tok(1),
        )
        assert replies[0] == 2
    assert await app.zcard(out) == 2


async def test_lua_body_under_the_fence(redis_server, app) -> None:
    resource = name("stock")
    async with RedisGuard.from_url(redis_server.url) as guard:
        take = guard.script(
            """
            local left = tonumber(redis.call('GET', KEYS[1]) or ARGV[2])
            if left < tonumber(ARGV[1]) then
              return redis.error_reply('not enough stock')
            end
            return redis.call('SET', KEYS[1], left - ARGV[1], 'GET')
            """
        )
        assert await take(resource, keys=[resource], args=[3, 10], token=tok(5)) is None
        assert await take(resource, keys=[resource], args=[3, 10], token=tok(5)) == b"7"
        with pytest.raises(StaleTokenError):
            await take(resource, keys=[resource], args=[1, 10], token=tok(4, owner="old"))
        with pytest.raises(GuardedCommandError, match="not enough stock"):
            await take(resource, keys=[resource], args=[100, 10], token=tok(6))
        with pytest.raises(GuardedCommandError, match="compil"):
            await guard.script("return (")(resource, token=tok(6))
        assert await guard.script("return")(resource, token=tok(6)) is None
        assert await guard.script("return {KEYS[1], ARGV[1], #KEYS, #ARGV}")(
            resource, keys=["k"], args=["a"], token=tok(6)
        ) == [b"k", b"a", 1, 1]
    assert await app.get(resource) == b"4"


# -- the application's client -----------------------------------------------------------


async def test_app_client_conformance_and_never_closed(app) -> None:
    await check_guard(lambda: RedisGuard.from_client(app))
    async with RedisGuard.from_client(app, codec=TEXT) as guard:
        resource = name()
        await guard.write(resource, "v", token=tok(1))
        assert await guard.execute(resource, [("SET", resource, "x")], token=tok(1)) == [b"OK"]
    assert await app.ping()
    assert await app.get(resource) == b"x"


async def test_app_client_with_decoded_responses(redis_server) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        async with RedisGuard.from_client(client) as guard:
            resource = name()
            await guard.write(resource, {"n": 1}, token=tok(1))
            assert await guard.read(resource) == {"n": 1}
            with pytest.raises(StaleTokenError):
                await guard.write(resource, {"n": 0}, token=tok(0))
    finally:
        await client.aclose()


# -- Cluster ----------------------------------------------------------------------------


@pytest.mark.cluster
async def test_cluster_keys_must_share_the_resource_slot(redis_cluster) -> None:
    resource = name("order")
    async with RedisGuard.from_url(redis_cluster.url) as guard:
        tag = guard.hash_tag(resource)
        assert key_slot(guard.key(resource).encode()) == key_slot(resource.encode())
        replies = await guard.execute(
            resource,
            [("SET", resource, "paid"), ("RPUSH", f"log:{tag}", "paid")],
            token=tok(1),
        )
        assert replies == [b"OK", 1]
        elsewhere = next(
            k
            for k in (f"x{i}" for i in range(100))
            if key_slot(k.encode()) != key_slot(resource.encode())
        )
        with pytest.raises(ConfigurationError, match=r"slot .* put the hash tag") as info:
            await guard.execute(
                resource, [("SET", resource, "lost"), ("SET", elsewhere, "x")], token=tok(2)
            )
        assert tag in str(info.value)
        with pytest.raises(ConfigurationError, match="slot"):
            await guard.script("return 1")(resource, keys=[elsewhere], token=tok(2))
        fence = await guard.fence(resource)
        assert fence is not None and fence.token == 1, "a refused call raised the fence"
        body = guard.script("return redis.call('GET', KEYS[1])")
        assert await body(resource, keys=[resource], token=tok(2)) == b"paid"


@pytest.mark.cluster
async def test_cluster_app_client(redis_cluster) -> None:
    client = AppCluster(startup_nodes=[ClusterNode(h, p) for h, p in redis_cluster.startup_nodes])
    try:
        await check_guard(lambda: RedisGuard.from_client(client))
        async with RedisGuard.from_client(client) as guard:
            resource = name()
            await guard.execute(resource, [("SET", resource, "v")], token=tok(1))
            elsewhere = next(
                k
                for k in (f"x{i}" for i in range(100))
                if key_slot(k.encode()) != key_slot(resource.encode())
            )
            with pytest.raises(ConfigurationError, match="slot"):
                await guard.execute(resource, [("SET", elsewhere, "v")], token=tok(1))
        assert await client.get(resource) == b"v"
    finally:
        await client.aclose()


@pytest.mark.cluster
async def test_sentinel_conformance(redis_sentinel) -> None:
    await check_guard(lambda: RedisGuard.from_url(redis_sentinel.url))


# -- construction and credentials ------------------------------------------------------


async def test_credentials_stay_out_of_reprs_and_errors(redis_server, app) -> None:
    user = f"guard-{uuid.uuid4().hex[:6]}"
    await app.execute_command("ACL", "SETUSER", user, "on", ">s3cr3t-pw", "~*", "+@all")
    host, port = redis_server.host, redis_server.port
    try:
        async with RedisGuard.from_url(f"redis://{user}:s3cr3t-pw@{host}:{port}/0") as guard:
            assert "s3cr3t" not in repr(guard)
            await guard.write(name(), 1, token=tok(1))
        wrong = RedisGuard.from_url(f"redis://{user}:wr0ng-pw@{host}:{port}/0")
        with pytest.raises(ConfigurationError, match="credentials") as info:
            async with wrong:
                pass
        assert "wr0ng" not in str(info.value) and "wr0ng" not in repr(wrong)
    finally:
        await app.execute_command("ACL", "DELUSER", user)


def test_url_errors() -> None:
    with pytest.raises(ConfigurationError, match="does not serve"):
        RedisGuard.from_url("etcd://localhost:2379")
    with pytest.raises(ConfigurationError, match="fair"):
        RedisGuard.from_url("redis://localhost/0?fair=false")
    with pytest.raises(ConfigurationError, match="prefix"):
        RedisGuard.from_url("redis://localhost/0", prefix="{x}")
    assert RedisGuard.from_url("redis://localhost/0?prefix=mine:").prefix == "mine:"


async def test_closed_guard_refuses_calls(redis_server) -> None:
    guard = RedisGuard.from_url(redis_server.url)
    async with guard:
        pass
    with pytest.raises(lockkit.LockUsageError):
        await guard.read("x")
    await guard.aclose()  # idempotent


async def test_unreachable_redis_is_backend_unavailable(servers) -> None:
    server = servers.redis()
    url = server.url
    server.stop()
    with pytest.raises(lockkit.BackendUnavailable):
        async with RedisGuard.from_url(url, connect_timeout=1):
            pass


# -- a paused lock holder, fenced by Redis ----------------------------------------------

HOLDER = """
import sys, anyio, lockkit
from lockkit.guards.redis import RedisGuard

async def main(url, name, resource):
    async with lockkit.connect(url) as locks, RedisGuard.from_url(url) as guard:
        try:
            async with locks.lock(name, ttl=1.0, on_lost="raise") as token:
                await guard.write(resource, "written by the first holder", token=token)
                print("WROTE", int(token), flush=True)
                await anyio.sleep(1.5)  # frozen in here, past the lease
                try:
                    await guard.write(resource, "late write from the paused holder", token=token)
                    print("ACCEPTED", flush=True)
                except lockkit.StaleTokenError as exc:
                    print("REFUSED", exc.current, flush=True)
        except lockkit.LockLostError as exc:
            print("LOST", exc.reason, flush=True)

anyio.run(main, *sys.argv[1:])
"""


@pytest.mark.fault
async def test_paused_holder_in_another_process_is_refused_by_redis(redis_server) -> None:
    lock, resource = name("paused"), name("stock")
    child = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
        [sys.executable, "-c", HOLDER, redis_server.url, lock, resource],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        kind, old = (await anyio.to_thread.run_sync(child.stdout.readline)).split()
        assert kind == "WROTE"
        os.kill(child.pid, signal.SIGSTOP)
        started = time.monotonic()
        async with (
            lockkit.connect(redis_server.url) as locks,
            RedisGuard.from_url(redis_server.url) as guard,
        ):
            async with locks.lock(lock, ttl=10, timeout=10) as new:
                assert int(new) > int(old)
                assert time.monotonic() - started < 3
                await guard.write(resource, "written by the second holder", token=new)
                os.kill(child.pid, signal.SIGCONT)
                lines = (await anyio.to_thread.run_sync(child.communicate, None, 20))[0]
            assert f"REFUSED {int(new)}" in lines, lines
            assert "ACCEPTED" not in lines
            stored = await guard.read_versioned(resource)
            assert stored == lockkit.abc.Versioned("written by the second holder", 2)
            fence = await guard.fence(resource)
            assert fence is not None and (fence.token, fence.owner) == (int(new), new.owner)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
        child.wait()
