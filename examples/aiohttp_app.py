"""A small inventory service on aiohttp: stock counters changed under a lock per SKU,
written through a guard that refuses a holder whose lock was taken over.

    python examples/aiohttp_app.py                                 # memory://, port 8080
    python examples/aiohttp_app.py --url redis://localhost:6379/0  # locks and stock in Redis

    curl -X POST 'localhost:8080/stock/apples/restock?quantity=10'
    curl -X POST 'localhost:8080/stock/apples/reserve?quantity=3'
    curl localhost:8080/stock/apples
    curl localhost:8080/ready

With a ``redis://`` URL (or ``rediss://``, ``redis+sentinel://``, ``redis+cluster://``)
the stock lives in Redis behind a ``RedisGuard``, so several copies of the service can
share it; with any other URL it lives in this process behind a ``MemoryGuard``.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from lockkit import FencingToken
from lockkit.abc import Guard
from lockkit.guards.memory import MemoryGuard
from lockkit.integrations.aiohttp import locked, setup

REDIS_SCHEMES = ("redis://", "rediss://", "redis+sentinel://", "redis+cluster://")

GUARD = web.AppKey("guard", Guard[Any])
routes = web.RouteTableDef()


def quantity(request: web.Request) -> int:
    try:
        value = int(request.query.get("quantity", "1"))
    except ValueError:
        value = 0
    if value <= 0:
        raise web.HTTPUnprocessableEntity(text="quantity must be a positive integer")
    return value


@routes.get("/stock/{sku}")
async def show(request: web.Request) -> web.Response:
    sku = request.match_info["sku"]
    level = await request.app[GUARD].read(f"stock:{sku}") or 0
    return web.json_response({"sku": sku, "stock": level})


@routes.post("/stock/{sku}/restock")
@locked("stock:{sku}", ttl=10, timeout=5)
async def restock(request: web.Request, token: FencingToken) -> web.Response:
    sku, stock, added = request.match_info["sku"], request.app[GUARD], quantity(request)
    level = await stock.read(f"stock:{sku}") or 0
    await stock.write(f"stock:{sku}", level + added, token=token)
    return web.json_response({"sku": sku, "stock": level + added, "token": token})


@routes.post("/stock/{sku}/reserve")
@locked("stock:{sku}", ttl=10, timeout=5)
async def reserve(request: web.Request, token: FencingToken) -> web.Response:
    sku, stock, wanted = request.match_info["sku"], request.app[GUARD], quantity(request)
    level = await stock.read(f"stock:{sku}") or 0
    if level < wanted:
        raise web.HTTPConflict(text=f"only {level} left")
    await stock.write(f"stock:{sku}", level - wanted, token=token)
    return web.json_response({"sku": sku, "stock": level - wanted, "token": token})


def open_guard(url: str) -> Callable[[web.Application], AsyncIterator[None]]:
    async def guard_context(app: web.Application) -> AsyncIterator[None]:
        if url.startswith(REDIS_SCHEMES):
            from lockkit.guards.redis import RedisGuard

            async with RedisGuard.from_url(url, prefix="inventory:") as guard:
                app[GUARD] = guard
                yield
        else:
            app[GUARD] = MemoryGuard()
            yield

    return guard_context


def create_app(url: str = "memory://") -> web.Application:
    app = web.Application()
    setup(app, url, readiness="/ready")
    app.cleanup_ctx.append(open_guard(url))
    app.add_routes(routes)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://", help="lock service (default memory://)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    web.run_app(create_app(args.url), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
