"""Running an ASGI app on a real uvicorn server inside the test's event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def server_for(app: Any) -> uvicorn.Server:
    config = uvicorn.Config(
        app, lifespan="on", log_level="warning", ws="none", http="h11", access_log=False
    )
    return uvicorn.Server(config)


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yields its base URL. Startup
    and shutdown (the app's lifespan) run in one task, as in production."""
    with bound_socket() as sock:
        port = sock.getsockname()[1]
        server = server_for(app)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if task.done():
                    await task
                    raise AssertionError("uvicorn did not start the app")
                await asyncio.sleep(0.01)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await task
