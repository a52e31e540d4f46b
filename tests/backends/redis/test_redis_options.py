"""Redis options that change what is stored: how long the last-token key is kept."""

from __future__ import annotations

import uuid

import anyio
import pytest
import redis.asyncio as aioredis

import lockkit
from lockkit.backends.redis import RedisBackend

pytestmark = pytest.mark.redis


async def test_fence_keep_sets_how_long_the_last_token_outlives_the_lock(redis_server) -> None:
    prefix = f"fk{uuid.uuid4().hex[:8]}:"
    app = aioredis.Redis.from_url(redis_server.url)
    try:
        async with lockkit.connect(redis_server.url, prefix=prefix, fence_keep=0.5) as locks:
            backend = locks.backend
            assert isinstance(backend, RedisBackend)
            fence_key = backend.keys("job").fence
            async with locks.lock("job", ttl=5) as first:
                pass
            kept_ms = await app.pttl(fence_key)
            assert 0 < kept_ms <= 500, f"the last-token key lives {kept_ms} ms, wanted <= 500"
            with anyio.fail_after(5):
                while await app.exists(fence_key):  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            # the key is gone, yet tokens still rise: they are floored by server time
            async with locks.lock("job", ttl=5) as second:
                assert int(second) > int(first)
    finally:
        await app.aclose()


def test_fence_keep_must_be_a_positive_number_of_seconds() -> None:
    for bad in ("0", "-1", "soon"):
        with pytest.raises(lockkit.ConfigurationError, match="fence_keep"):
            lockkit.connect(f"redis://localhost:6379/0?fence_keep={bad}")
