"""lockkit in a FastAPI service: one client per app, a lock per request, errors as HTTP.

.. code-block:: python

    from lockkit.integrations.fastapi import install, lifespan, lock_for

    app = FastAPI(lifespan=lifespan("redis://localhost:6379/0"))
    install(app, readiness="/ready")


    @app.post("/orders/{order_id}/pay")
    async def pay(order_id: str, token: FencingToken = lock_for("orders:{order_id}")):
        await guard.write(f"orders:{order_id}", {"state": "paid"}, token=token)

- :func:`lifespan` opens one :class:`~lockkit.LockClient` when the app starts and
  closes it when the app stops. Opening does a round trip to the server, so a service
  whose lock server is down or refuses its credentials fails to start instead of
  starting "healthy". The client is ``app.state.lockkit``.
- :data:`Locks` is the client as a typed dependency: ``locks: Locks``.
- :func:`lock_for` locks a name built from the route's path parameters for the
  request and hands the :class:`~lockkit.FencingToken` to the endpoint.
- :func:`install` turns lockkit's errors into ``application/problem+json`` responses
  (``LockTimeout`` 423 with ``Retry-After``, ``BackendUnavailable`` and
  ``LockLostError`` 503 with ``Retry-After``, ``StaleTokenError`` and
  ``WriteConflictError`` 409, ``InvalidLockName`` 400) and, if asked, adds a
  readiness route (:func:`readiness`).

.. versionadded:: 0.1
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.applications import Starlette

from .._core._client import LockClient, connect
from .._core._errors import LockError, LockUsageError
from .._core._hold import OnLost
from .._core._token import FencingToken
from ._problems import (
    MAPPED,
    PROBLEM_JSON,
    Problem,
    RetryAfter,
    lock_name,
    problem_for,
    readiness_check,
    template_fields,
)

__all__ = (
    "Locks",
    "get_client",
    "install",
    "lifespan",
    "lock_for",
    "open_client",
    "problem_response",
    "readiness",
)

#: What ``FastAPI(lifespan=...)`` takes.
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


@asynccontextmanager
async def open_client(
    app: Starlette, url: str = "memory://", **options: Any
) -> AsyncIterator[LockClient]:
    """Open a client for ``app`` and put it on ``app.state.lockkit`` while the block
    runs; for an application that writes its own lifespan:

    .. code-block:: python

        @asynccontextmanager
        async def my_lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with open_client(app, "redis://localhost:6379/0"):
                yield

    Raises:
        BackendUnavailable: the server cannot be reached.
        ConfigurationError: bad URL or option, credentials refused.
    """
    async with connect(url, **options) as client:
        app.state.lockkit = client
        try:
            yield client
        finally:
            del app.state.lockkit


def lifespan(url: str = "memory://", *, then: Lifespan | None = None, **options: Any) -> Lifespan:
    """A lifespan for ``FastAPI(lifespan=...)`` that opens one client for the app.

    Args:
        url: the lock service, as for :func:`lockkit.connect`.
        then: the application's own lifespan, run inside, with the client open (what
            it yields, such as a state mapping, is passed on).
        **options: options for :func:`lockkit.connect`.
    """

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[Any]:
        async with open_client(app, url, **options):
            if then is None:
                yield None
            else:
                async with then(app) as state:
                    yield state

    return run


def get_client(request: Request) -> LockClient:
    """The app's client (a dependency; :data:`Locks` is the annotated form).

    Raises:
        LockUsageError: the app was built without :func:`lifespan` or
            :func:`open_client`, or has stopped.
    """
    client = getattr(request.app.state, "lockkit", None)
    if not isinstance(client, LockClient):
        raise LockUsageError(
            "no lockkit client on app.state: build the app with "
            "FastAPI(lifespan=lockkit.integrations.fastapi.lifespan(url))"
        )
    return client


#: The app's :class:`~lockkit.LockClient`, for endpoints: ``async def f(locks: Locks)``.
Locks = Annotated[LockClient, Depends(get_client)]


def lock_for(
    template: str,
    *,
    ttl: float | None = None,
    timeout: float | None = 5.0,
    on_lost: OnLost = "cancel",
) -> Any:
    """A dependency that holds the lock ``template`` names for this request and gives
    the endpoint its :class:`~lockkit.FencingToken`:
    ``token: FencingToken = lock_for("orders:{order_id}")``, or the same in
    ``Annotated[FencingToken, lock_for(...)]``.

    ``{field}`` takes the route's path parameter of that name. The lock is held while
    the endpoint runs and its return value becomes a response, and released **before**
    the response is sent: a slow client never holds the lock, and a lease lost on
    the way (``LockLostError``) still becomes a 503 instead of a 200 that cannot be
    trusted. A ``StreamingResponse`` body and background tasks therefore run after
    the release; work in them that needs the lock takes it itself (through
    :data:`Locks`).

    Args:
        template: the lock name, ``{name}`` fields filled from path parameters.
        ttl: lease length (default: the client's ``default_ttl``).
        timeout: how long a request waits for the lock before it is answered 423
            (default 5 s; ``None`` waits as long as the client stays connected).
        on_lost: as for :meth:`lockkit.LockClient.lock`. With ``"cancel"`` an
            ``async def`` endpoint is cancelled when the lease is lost.

    Raises:
        ValueError: the template has a field that is not a plain ``{name}``.
    """
    template_fields(template)

    async def hold(request: Request, client: Locks) -> AsyncIterator[FencingToken]:
        name = lock_name(template, request.path_params)
        async with client.lock(name, ttl=ttl, timeout=timeout, on_lost=on_lost) as token:
            yield token

    hold.__name__ = hold.__qualname__ = f"lock_for({template!r})"
    return Depends(hold, scope="function")


def problem_response(problem: Problem) -> Response:
    """``problem`` as a Starlette response."""
    return Response(
        problem.content(),
        status_code=problem.status,
        headers=problem.headers,
        media_type=PROBLEM_JSON,
    )


def readiness(timeout: float = 1.0) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint for readiness probes: 200 with the round trip's latency when the
    lock service answers a ping within ``timeout`` seconds, else 503 (problem body,
    ``Retry-After``). ``app.get("/ready")(readiness())``, or ``install(app,
    readiness="/ready")``."""

    async def ready(request: Request) -> Response:
        client = getattr(request.app.state, "lockkit", None)
        outcome = await readiness_check(client if isinstance(client, LockClient) else None, timeout)
        if isinstance(outcome, Problem):
            return problem_response(outcome)
        return JSONResponse({"status": "ready", "latency_ms": round(outcome * 1000, 3)})

    return ready


def install(
    app: FastAPI,
    *,
    readiness: str | None = None,
    readiness_timeout: float = 1.0,
    retry_after: RetryAfter | None = None,
) -> None:
    """Answer lockkit's errors with problem responses; with ``readiness="/ready"``, add
    that route too (left out of the OpenAPI schema).

    Args:
        app: the application.
        readiness: path of a readiness route to add, if any.
        readiness_timeout: how long the readiness route waits for a ping.
        retry_after: ``Retry-After`` seconds per error class, overriding the defaults
            (``LockTimeout`` 1, ``BackendUnavailable`` 5, ``LockLostError`` 1).
    """

    async def handle(request: Request, exc: Exception) -> Response:
        problem = problem_for(exc, retry_after) if isinstance(exc, LockError) else None
        if problem is None:  # pragma: no cover - only mapped classes are registered
            raise exc
        return problem_response(problem)

    for kind in MAPPED:
        app.add_exception_handler(kind, handle)
    if readiness is not None:
        app.add_api_route(
            readiness, _ready(readiness_timeout), methods=["GET"], include_in_schema=False
        )


_ready = readiness
