"""lockkit in an aiohttp service: one client per app, a lock per request, errors as HTTP.

.. code-block:: python

    from lockkit.integrations.aiohttp import locked, setup

    app = web.Application()
    setup(app, "redis://localhost:6379/0", readiness="/ready")


    @locked("orders:{order_id}")
    async def pay(request: web.Request, token: FencingToken) -> web.Response:
        await guard.write(f"orders:{request.match_info['order_id']}", "paid", token=token)
        return web.json_response({"token": token})

- :func:`setup` is the three pieces below in one call: :func:`client_context` in
  ``app.cleanup_ctx`` (one :class:`~lockkit.LockClient` for the app, stored under
  :data:`LOCKS`; opening it does a round trip, so an app whose lock server is down
  fails to start), :func:`error_middleware`, and optionally a :func:`readiness` route.
- :func:`lock_for` (``async with lock_for(request, "orders:{order_id}") as token``) and
  the :func:`locked` decorator lock a name built from ``request.match_info``.
- The middleware answers lockkit's errors with ``application/problem+json``:
  ``LockTimeout`` 423 with ``Retry-After``, ``BackendUnavailable`` and
  ``LockLostError`` 503 with ``Retry-After``, ``StaleTokenError`` and
  ``WriteConflictError`` 409, ``InvalidLockName`` 400.

.. versionadded:: 0.1
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .._core._client import LockClient, connect
from .._core._errors import LockError
from .._core._hold import OnLost
from .._core._lock import Lock
from .._core._token import FencingToken
from ._problems import (
    PROBLEM_JSON,
    Problem,
    RetryAfter,
    lock_name,
    problem_for,
    readiness_check,
    template_fields,
)

__all__ = (
    "LOCKS",
    "client_context",
    "error_middleware",
    "lock_for",
    "locked",
    "problem_response",
    "readiness",
    "setup",
)

#: Where the app keeps its client: ``request.config_dict[LOCKS]``.
LOCKS: Final = web.AppKey("lockkit", LockClient)

ResponseT = TypeVar("ResponseT", bound=web.StreamResponse)


def client_context(
    url: str = "memory://", **options: Any
) -> Callable[[web.Application], AsyncIterator[None]]:
    """For ``app.cleanup_ctx``: opens a client when the app starts (one round trip to
    the server), stores it as ``app[LOCKS]`` and closes it when the app stops. Under
    ``web.run_app`` (or an ``AppRunner`` set up and cleaned up by one task) both halves
    run in the same task, as a client requires.

    Raises (at startup):
        BackendUnavailable: the server cannot be reached.
        ConfigurationError: bad URL or option, credentials refused.
    """

    async def lockkit_client(app: web.Application) -> AsyncIterator[None]:
        async with connect(url, **options) as client:
            app[LOCKS] = client
            yield

    return lockkit_client


def lock_for(
    request: web.Request,
    template: str,
    *,
    ttl: float | None = None,
    timeout: float | None = 5.0,
    on_lost: OnLost = "cancel",
) -> Lock:
    """The lock that ``template`` names for this request, ``{field}`` taken from
    ``request.match_info``: ``async with lock_for(request, "orders:{order_id}") as
    token:``. ``timeout`` defaults to 5 s (then 423); the rest is as for
    :meth:`lockkit.LockClient.lock`.

    Raises:
        InvalidLockName: the name built from the path is not a valid lock name.
        LockUsageError: the template uses a field the route does not define.
    """
    name = lock_name(template, request.match_info)
    return request.config_dict[LOCKS].lock(name, ttl=ttl, timeout=timeout, on_lost=on_lost)


def locked(
    template: str,
    *,
    ttl: float | None = None,
    timeout: float | None = 5.0,
    on_lost: OnLost = "cancel",
) -> Callable[
    [Callable[[web.Request, FencingToken], Awaitable[ResponseT]]],
    Callable[[web.Request], Awaitable[ResponseT]],
]:
    """A decorator for handlers taking ``(request, token)``: the lock is held while the
    handler runs and released when it returns, before aiohttp sends the response (a
    handler that streams with ``prepare()``/``write()`` does so under the lock).

    Raises:
        ValueError: the template has a field that is not a plain ``{name}``.
    """
    template_fields(template)

    def decorate(
        handler: Callable[[web.Request, FencingToken], Awaitable[ResponseT]],
    ) -> Callable[[web.Request], Awaitable[ResponseT]]:
        @functools.wraps(handler)
        async def locked_handler(request: web.Request) -> ResponseT:
            lock = lock_for(request, template, ttl=ttl, timeout=timeout, on_lost=on_lost)
            async with lock as token:
                response = await handler(request, token)
            return response

        return locked_handler

    return decorate


def problem_response(problem: Problem) -> web.Response:
    """``problem`` as an aiohttp response."""
    return web.Response(
        body=problem.content(),
        status=problem.status,
        headers=problem.headers,
        content_type=PROBLEM_JSON,
    )


def error_middleware(retry_after: RetryAfter | None = None) -> Middleware:
    """A middleware that answers lockkit's errors with problem responses (see the
    module's docstring); other errors pass through.

    Args:
        retry_after: ``Retry-After`` seconds per error class, overriding the defaults
            (``LockTimeout`` 1, ``BackendUnavailable`` 5, ``LockLostError`` 1).
    """

    @web.middleware
    async def lockkit_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except LockError as exc:
            problem = problem_for(exc, retry_after)
            if problem is None:
                raise
            return problem_response(problem)

    return lockkit_errors


def readiness(timeout: float = 1.0) -> Handler:
    """A handler for readiness probes: 200 with the round trip's latency when the lock
    service answers a ping within ``timeout`` seconds, else 503 (problem body,
    ``Retry-After``)."""

    async def ready(request: web.Request) -> web.StreamResponse:
        outcome = await readiness_check(request.config_dict.get(LOCKS), timeout)
        if isinstance(outcome, Problem):
            return problem_response(outcome)
        return web.json_response({"status": "ready", "latency_ms": round(outcome * 1000, 3)})

    return ready


def setup(
    app: web.Application,
    url: str = "memory://",
    *,
    readiness: str | None = None,
    readiness_timeout: float = 1.0,
    retry_after: RetryAfter | None = None,
    **options: Any,
) -> None:
    """Give ``app`` a client for ``url`` (:func:`client_context`), the error middleware
    and, with ``readiness="/ready"``, a readiness route. ``options`` go to
    :func:`lockkit.connect`."""
    app.cleanup_ctx.append(client_context(url, **options))
    app.middlewares.append(error_middleware(retry_after))
    if readiness is not None:
        app.router.add_get(readiness, _ready(readiness_timeout))


_ready = readiness
