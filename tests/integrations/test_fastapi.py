"""The FastAPI integration on a real uvicorn server, driven over HTTP with httpx."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import StreamingResponse

import lockkit
from lockkit import FencingToken, LockUsageError
from lockkit.guards.memory import MemoryGuard
from lockkit.integrations.fastapi import Locks, install, lifespan, lock_for, readiness
from lockkit.testing import pause_renewals
from tests.servers._base import free_ports

from ._serving import bound_socket, server_for, serving

router = APIRouter()

CounterLock = Annotated[FencingToken, lock_for("counter:{cid}", ttl=10, timeout=30)]
ResourceLock = Annotated[FencingToken, lock_for("res:{rid}", ttl=10, timeout=0.3)]
#: renewals are paused below, so this lease runs out after 0.3 s
ShortLock = Annotated[FencingToken, lock_for("short:{rid}", ttl=0.3)]


@router.post("/counters/{cid}")
async def increment(cid: str, request: Request, token: CounterLock) -> dict[str, int]:
    counts = request.app.state.counts
    value = counts[cid]
    await asyncio.sleep(0.02)  # read, wait, write: concurrent requests would overlap here
    counts[cid] = value + 1
    return {"value": value + 1, "token": token}


@router.post("/unlocked/{cid}")
async def increment_unlocked(cid: str, request: Request) -> dict[str, int]:
    counts = request.app.state.counts
    value = counts[cid]
    await asyncio.sleep(0.02)
    counts[cid] = value + 1
    return {"value": value + 1}


@router.post("/resources/{rid}")
async def write(
    rid: str, request: Request, token: ResourceLock, version: int | None = None
) -> dict[str, int]:
    await request.app.state.guard.write(f"res:{rid}", "v", token=token, expect_version=version)
    return {"token": token}


@router.post("/short/{rid}")
async def overstay(rid: str, locks: Locks, token: ShortLock) -> dict[str, int]:
    with pause_renewals(locks):  # as if this process stalled
        await asyncio.sleep(5)
    return {"token": token}


@router.get("/streamed/{rid}")
async def streamed(rid: str, locks: Locks, token: ResourceLock) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        async with locks.lock(f"res:{rid}", timeout=0):
            yield b"the lock was free again when the body streamed"

    return StreamingResponse(body())


@router.get("/client")
async def client_type(locks: Locks) -> dict[str, str]:
    return {"client": type(locks).__name__}


def make_app(url: str) -> FastAPI:
    app = FastAPI(lifespan=lifespan(url))
    install(app, readiness="/ready")
    app.include_router(router)
    app.state.counts = defaultdict(int)
    app.state.guard = MemoryGuard()
    return app


def shared_memory() -> str:
    """A memory:// store that this process's other clients (the test's) share."""
    return f"memory://fastapi-{uuid.uuid4().hex[:8]}"


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert set(body) == {"type", "title", "status", "detail", "code"}
    return body


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return shared_memory()
    server = request.getfixturevalue("redis_server")
    return f"{server.url}?prefix=fastapi-{uuid.uuid4().hex[:8]}:"


async def test_concurrent_requests_on_one_id_never_lose_an_update(url: str) -> None:
    """200 requests at once over 20 ids, each a read, a pause and a write: every id ends
    at its request count, and each id's tokens rise with its values. The same requests
    without the lock do lose updates, so the pause really lets them overlap."""
    app = make_app(url)
    ids = [f"c{i}" for i in range(20)]
    # a connection per request: reusing 200 idle keep-alive connections is slow in httpx
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
    async with serving(app) as base, httpx.AsyncClient(base_url=base, limits=limits) as http:
        locked = await asyncio.gather(*(http.post(f"/counters/{cid}") for cid in ids * 10))
        assert [r.status_code for r in locked] == [200] * 200
        assert dict(app.state.counts) == dict.fromkeys(ids, 10)
        tokens: dict[str, dict[int, int]] = defaultdict(dict)
        for cid, response in zip(ids * 10, locked, strict=True):
            tokens[cid][response.json()["value"]] = response.json()["token"]
        for cid in ids:
            by_value = [tokens[cid][value] for value in range(1, 11)]
            assert by_value == sorted(set(by_value)), (cid, by_value)

        app.state.counts.clear()
        unlocked = await asyncio.gather(*(http.post(f"/unlocked/{cid}") for cid in ids * 10))
        assert [r.status_code for r in unlocked] == [200] * 200
        assert sum(app.state.counts.values()) < 200


async def test_a_busy_lock_is_423_with_retry_after() -> None:
    url = shared_memory()
    async with (
        serving(make_app(url)) as base,
        httpx.AsyncClient(base_url=base) as http,
        lockkit.connect(url) as other,
    ):
        async with other.lock("res:busy"):
            response = await http.post("/resources/busy")
        body = problem(response, 423, "lock_timeout")
        assert response.headers["retry-after"] == "1"
        assert body["title"] == "Locked"
        assert "res:busy" not in response.text  # no lock names, no server details
        assert (await http.post("/resources/busy")).status_code == 200


async def test_a_refused_write_is_409() -> None:
    url = shared_memory()
    app = make_app(url)
    async with serving(app) as base, httpx.AsyncClient(base_url=base) as http:
        newer = FencingToken(10**15, name="res:r1", backend="memory", owner="elsewhere")
        await app.state.guard.write("res:r1", "newer", token=newer)
        problem(await http.post("/resources/r1"), 409, "stale_token")
        assert await app.state.guard.read("res:r1") == "newer"

        problem(await http.post("/resources/r2", params={"version": 7}), 409, "write_conflict")
        assert await app.state.guard.read("res:r2") is None


async def test_a_lease_lost_while_the_endpoint_runs_is_503() -> None:
    url = shared_memory()
    async with (
        serving(make_app(url)) as base,
        httpx.AsyncClient(base_url=base) as http,
        lockkit.connect(url) as other,
    ):
        started = asyncio.get_running_loop().time()
        response = await http.post("/short/s1")
        problem(response, 503, "lock_lost")
        assert response.headers["retry-after"] == "1"
        assert asyncio.get_running_loop().time() - started < 3  # cut short, not slept out
        async with other.lock("short:s1", timeout=0):  # nothing left held
            pass


async def test_an_invalid_name_from_the_path_is_400() -> None:
    async with serving(make_app(shared_memory())) as base, httpx.AsyncClient(base_url=base) as http:
        body = problem(await http.post(f"/resources/{'x' * 1100}"), 400, "invalid_lock_name")
        assert "xxxx" not in body["detail"]


async def test_the_lock_is_released_before_a_streamed_body_runs() -> None:
    async with serving(make_app(shared_memory())) as base, httpx.AsyncClient(base_url=base) as http:
        response = await http.get("/streamed/st1")
        assert response.status_code == 200, response.text
        assert response.text == "the lock was free again when the body streamed"


async def test_the_client_dependency_and_readiness_on_memory() -> None:
    async with serving(make_app(shared_memory())) as base, httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/client")).json() == {"client": "LockClient"}
        ready = await http.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"
        assert "/ready" not in (await http.get("/openapi.json")).text


@pytest.mark.redis
async def test_redis_down_is_503_and_readiness_follows_it(servers: Any) -> None:
    redis = servers.redis()
    async with serving(make_app(redis.url)) as base, httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/ready")).status_code == 200
        assert (await http.post("/resources/d1")).status_code == 200

        await redis.astop()
        ready = await http.get("/ready")
        problem(ready, 503, "lock_service_unavailable")
        assert ready.headers["retry-after"] == "5"
        response = await http.post("/resources/d1")
        problem(response, 503, "lock_service_unavailable")
        assert response.headers["retry-after"] == "5"
        assert redis.host not in response.text and str(redis.port) not in response.text

        await redis.astart()
        for _ in range(100):
            if (await http.get("/ready")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert (await http.get("/ready")).status_code == 200
        assert (await http.post("/resources/d1")).status_code == 200


@pytest.mark.redis
async def test_the_app_does_not_start_when_redis_is_unreachable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    (port,) = free_ports(1)  # nothing listens there
    with bound_socket() as sock:
        server = server_for(make_app(f"redis://127.0.0.1:{port}/0?connect_timeout=1"))
        # in this task, not another: asyncio lets a task's SystemExit out of the loop
        with pytest.raises(SystemExit) as exited:  # uvicorn's way to say it
            await server.serve(sockets=[sock])
        assert exited.value.code == 3  # uvicorn's STARTUP_FAILURE
        assert not server.started
        address = sock.getsockname()
    logged = capsys.readouterr().err
    assert "BackendUnavailable" in logged and "Application startup failed" in logged
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://{address[0]}:{address[1]}/ready")


async def test_without_the_lifespan_the_dependency_says_what_is_missing() -> None:
    app = FastAPI()
    app.include_router(router)
    install(app)
    app.add_api_route("/ready2", readiness(timeout=0.5))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        with pytest.raises(LockUsageError, match="lifespan"):
            await http.get("/client")
        problem(await http.get("/ready2"), 503, "lock_service_unavailable")


def test_templates_take_plain_fields_only() -> None:
    with pytest.raises(ValueError, match="plain"):
        lock_for("orders:{order.id}")
    with pytest.raises(ValueError, match="plain"):
        lock_for("orders:{order_id!r}")
