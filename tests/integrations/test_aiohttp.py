"""The aiohttp integration on aiohttp's test server. The client is opened and closed
by the test's own task (``async with TestClient(...)``), as ``web.run_app`` does."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import lockkit
from lockkit import BackendUnavailable, FencingToken
from lockkit.guards.memory import MemoryGuard
from lockkit.integrations.aiohttp import LOCKS, lock_for, locked, setup
from lockkit.testing import pause_renewals
from tests.servers._base import free_ports

COUNTS = web.AppKey("counts", defaultdict[str, int])
GUARD = web.AppKey("guard", MemoryGuard[str])
routes = web.RouteTableDef()


@routes.post("/counters/{cid}")
@locked("counter:{cid}", ttl=10, timeout=30)
async def increment(request: web.Request, token: FencingToken) -> web.Response:
    counts, cid = request.app[COUNTS], request.match_info["cid"]
    value = counts[cid]
    await asyncio.sleep(0.02)  # read, wait, write: concurrent requests would overlap here
    counts[cid] = value + 1
    return web.json_response({"value": value + 1, "token": token})


@routes.post("/resources/{rid}")
async def write(request: web.Request) -> web.Response:
    version = request.query.get("version")
    async with lock_for(request, "res:{rid}", timeout=0.3) as token:
        await request.app[GUARD].write(
            f"res:{request.match_info['rid']}",
            "v",
            token=token,
            expect_version=None if version is None else int(version),
        )
    return web.json_response({"token": token})


@routes.post("/short/{rid}")
@locked("short:{rid}", ttl=0.3)
async def overstay(request: web.Request, token: FencingToken) -> web.Response:
    with pause_renewals(request.app[LOCKS]):  # as if this process stalled
        await asyncio.sleep(5)
    return web.json_response({"token": token})


def make_app(url: str) -> web.Application:
    app = web.Application()
    setup(app, url, readiness="/ready")
    app[COUNTS] = defaultdict(int)
    app[GUARD] = MemoryGuard()
    app.add_routes(routes)
    return app


def shared_memory() -> str:
    return f"memory://aiohttp-{uuid.uuid4().hex[:8]}"


async def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    text = await response.text()
    assert response.status == status, text
    assert response.headers["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = await response.json(content_type="application/problem+json")
    assert (body["status"], body["code"]) == (status, code)
    assert set(body) == {"type", "title", "status", "detail", "code"}
    return body


async def test_concurrent_requests_never_lose_an_update() -> None:
    app = make_app(shared_memory())
    ids = [f"c{i}" for i in range(10)]
    async with TestClient(TestServer(app)) as http:
        responses = await asyncio.gather(*(http.post(f"/counters/{cid}") for cid in ids * 10))
        assert [r.status for r in responses] == [200] * 100
        counts = app[COUNTS]
        assert dict(counts) == dict.fromkeys(ids, 10)
        for response in responses:
            response.release()


async def test_busy_refused_lost_and_invalid_map_to_their_statuses() -> None:
    url = shared_memory()
    app = make_app(url)
    async with TestClient(TestServer(app)) as http, lockkit.connect(url) as other:
        async with other.lock("res:busy"):
            response = await http.post("/resources/busy")
        await problem(response, 423, "lock_timeout")
        assert response.headers["Retry-After"] == "1"
        assert "res:busy" not in await response.text()

        newer = FencingToken(10**15, name="res:r1", backend="memory", owner="elsewhere")
        await app[GUARD].write("res:r1", "newer", token=newer)
        await problem(await http.post("/resources/r1"), 409, "stale_token")
        await problem(await http.post("/resources/r2?version=7"), 409, "write_conflict")

        response = await http.post("/short/s1")
        await problem(response, 503, "lock_lost")
        assert response.headers["Retry-After"] == "1"

        await problem(await http.post(f"/resources/{'x' * 1100}"), 400, "invalid_lock_name")

        ready = await http.get("/ready")
        assert ready.status == 200
        assert (await ready.json())["status"] == "ready"


@pytest.mark.redis
async def test_redis_down_is_503_and_readiness_follows_it(servers: Any) -> None:
    redis = servers.redis()
    async with TestClient(TestServer(make_app(redis.url))) as http:
        assert (await http.post("/resources/d1")).status == 200
        await redis.astop()
        ready = await http.get("/ready")
        await problem(ready, 503, "lock_service_unavailable")
        assert ready.headers["Retry-After"] == "5"
        response = await http.post("/resources/d1")
        await problem(response, 503, "lock_service_unavailable")
        assert str(redis.port) not in await response.text()
        await redis.astart()
        for _ in range(100):
            if (await http.get("/ready")).status == 200:
                break
            await asyncio.sleep(0.1)
        assert (await http.post("/resources/d1")).status == 200


@pytest.mark.redis
async def test_the_app_does_not_start_when_redis_is_unreachable() -> None:
    (port,) = free_ports(1)
    server = TestServer(make_app(f"redis://127.0.0.1:{port}/0"))
    try:
        with pytest.raises(BackendUnavailable):
            await server.start_server()
    finally:
        await server.close()
