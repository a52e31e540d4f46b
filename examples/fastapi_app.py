"""A small inventory service on FastAPI: stock counters changed under a lock per SKU,
written through a guard that refuses a holder whose lock was taken over.

    python examples/fastapi_app.py                                 # memory://, port 8000
    python examples/fastapi_app.py --url redis://localhost:6379/0  # locks and stock in Redis

    curl -X POST localhost:8000/stock/apples/restock -H 'content-type: application/json' \\
         -d '{"quantity": 10}'
    curl -X POST localhost:8000/stock/apples/reserve -H 'content-type: application/json' \\
         -d '{"quantity": 3}'
    curl localhost:8000/stock/apples
    curl localhost:8000/ready

With a ``redis://`` URL (or ``rediss://``, ``redis+sentinel://``, ``redis+cluster://``)
the stock lives in Redis behind a ``RedisGuard``, so several copies of the service can
share it; with any other URL it lives in this process behind a ``MemoryGuard``.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from lockkit import FencingToken
from lockkit.abc import Guard
from lockkit.guards.memory import MemoryGuard
from lockkit.integrations.fastapi import install, lifespan, lock_for

REDIS_SCHEMES = ("redis://", "rediss://", "redis+sentinel://", "redis+cluster://")

router = APIRouter()


def get_guard(request: Request) -> Guard[Any]:
    guard: Guard[Any] = request.app.state.guard
    return guard


Stock = Annotated[Guard[Any], Depends(get_guard)]
#: The lock of one SKU, held while the endpoint runs; the endpoint gets its token.
SkuLock = Annotated[FencingToken, lock_for("stock:{sku}", ttl=10, timeout=5)]


class Change(BaseModel):
    quantity: int = Field(default=1, gt=0)


@router.get("/stock/{sku}")
async def show(sku: str, stock: Stock) -> dict[str, Any]:
    return {"sku": sku, "stock": await stock.read(f"stock:{sku}") or 0}


@router.post("/stock/{sku}/restock")
async def restock(sku: str, change: Change, token: SkuLock, stock: Stock) -> dict[str, Any]:
    level = await stock.read(f"stock:{sku}") or 0
    await stock.write(f"stock:{sku}", level + change.quantity, token=token)
    return {"sku": sku, "stock": level + change.quantity, "token": token}


@router.post("/stock/{sku}/reserve")
async def reserve(sku: str, change: Change, token: SkuLock, stock: Stock) -> dict[str, Any]:
    level = await stock.read(f"stock:{sku}") or 0
    if level < change.quantity:
        raise HTTPException(409, f"only {level} left")
    await stock.write(f"stock:{sku}", level - change.quantity, token=token)
    return {"sku": sku, "stock": level - change.quantity, "token": token}


def create_app(url: str = "memory://") -> FastAPI:
    @asynccontextmanager
    async def open_guard(app: FastAPI) -> AsyncIterator[None]:
        if url.startswith(REDIS_SCHEMES):
            from lockkit.guards.redis import RedisGuard

            async with RedisGuard.from_url(url, prefix="inventory:") as guard:
                app.state.guard = guard
                yield
        else:
            app.state.guard = MemoryGuard()
            yield

    app = FastAPI(title="inventory", lifespan=lifespan(url, then=open_guard))
    install(app, readiness="/ready")
    app.include_router(router)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://", help="lock service (default memory://)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(create_app(args.url), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
