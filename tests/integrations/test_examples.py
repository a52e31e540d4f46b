"""The example services run as a user runs them (``python examples/NAME.py``) and
serve what their docstrings promise, on memory:// and on Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers._base import free_ports

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ["fastapi_app", "aiohttp_app"]


def command(example: str, port: int, url: str | None) -> list[str]:
    args = [sys.executable, str(ROOT / "examples" / f"{example}.py"), "--port", str(port)]
    return args + (["--url", url] if url else [])


def environment() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def alive(process: asyncio.subprocess.Process) -> bool:
    return process.returncode is None


@asynccontextmanager
async def running(example: str, url: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The example on a free port until it answers /ready; stopped with Ctrl-C after,
    which must end it cleanly."""
    (port,) = free_ports(1)
    process = await asyncio.create_subprocess_exec(
        *command(example, port, url),
        env=environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    limits = httpx.Limits(max_keepalive_connections=0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as http:
            for _ in range(300):
                assert alive(process), await process.communicate()
                try:
                    if (await http.get("/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the example never became ready")
            yield http
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, (out + err).decode()
        assert b"Traceback" not in err, err.decode()
    finally:
        if alive(process):
            process.kill()
            await process.communicate()


async def change(http: httpx.AsyncClient, example: str, sku: str, what: str, n: int) -> Any:
    if example == "fastapi_app":
        return await http.post(f"/stock/{sku}/{what}", json={"quantity": n})
    return await http.post(f"/stock/{sku}/{what}", params={"quantity": n})


async def exercise(http: httpx.AsyncClient, example: str) -> None:
    skus = [f"sku-{uuid.uuid4().hex[:6]}-{i}" for i in range(10)]
    restocks = await asyncio.gather(*(change(http, example, s, "restock", 1) for s in skus * 10))
    assert [r.status_code for r in restocks] == [200] * 100
    for sku in skus:
        assert (await http.get(f"/stock/{sku}")).json()["stock"] == 10
    assert (await change(http, example, skus[0], "reserve", 11)).status_code == 409
    reserved = await change(http, example, skus[0], "reserve", 4)
    assert reserved.status_code == 200, reserved.text
    assert reserved.json()["stock"] == 6
    assert (await http.get(f"/stock/{skus[0]}")).json()["stock"] == 6


@pytest.mark.parametrize("example", EXAMPLES)
async def test_example_on_memory_by_default(example: str) -> None:
    async with running(example) as http:
        await exercise(http, example)


@pytest.mark.redis
@pytest.mark.parametrize("example", EXAMPLES)
async def test_example_on_redis(example: str, redis_server: Any) -> None:
    async with running(example, redis_server.url) as http:
        await exercise(http, example)


@pytest.mark.redis
@pytest.mark.parametrize("example", EXAMPLES)
def test_example_refuses_to_start_without_its_redis(example: str) -> None:
    (dead,) = free_ports(1)
    (port,) = free_ports(1)
    result = subprocess.run(
        command(example, port, f"redis://127.0.0.1:{dead}/0"),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "BackendUnavailable" in result.stderr
