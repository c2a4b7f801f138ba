"""The image routes without FastAPI's per-request machinery: the same route functions, called directly.

Why: on a one-image `POST /v1/denoise` at 32 clients, FastAPI's routing, dependency solving and exception
wrapping took about a fifth of the event loop's work, more than decoding and encoding the image
(py-spy, docs/benchmarks.md). The routes listed in `DirectRoute`s (the image routes, `app.http.routes.images`)
do the same few steps for every request, so the request pipeline (app.http.middleware) hands such a request
here: the route's dependencies are called in FastAPI's order (the API key when keys are configured, the image
job, the service), then the route's own function, and an error goes to the handler FastAPI would have chosen
(app.http.error_handlers). FastAPI keeps the OpenAPI schema, every other route, and these routes too whenever
this path could answer differently:
- query options that do not validate, or a repeated or empty query parameter (FastAPI words its own 422);
- dependency overrides (tests swap dependencies that way); CORS (its middleware runs inside the pipeline).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

from app.http.dependencies import get_registry, get_service
from app.http.security import require_api_key


@dataclass(frozen=True)
class DirectRoute:
    """A route this path may answer: its function, the dependency that opens its image job, and the options
    that dependency reads from the query (`app.http.routes.common.image_job`)."""

    endpoint: Callable[..., Awaitable[Response]]
    open_job: Callable[[Request, Any], Awaitable[Any]]
    options: type[BaseModel]


@dataclass(frozen=True)
class _Target:
    route: APIRoute
    direct: DirectRoute


class DirectRoutes:
    """`claim(scope)` -> an ASGI app answering the request as its FastAPI route would, or None (FastAPI's)."""

    def __init__(self, app: FastAPI, router: APIRouter, routes: tuple[DirectRoute, ...]) -> None:
        """`routes` of `router`, which `app` includes as it is (no prefix: the paths are the router's)."""
        self.app = app
        by_endpoint = {direct.endpoint: direct for direct in routes}
        self.targets = {
            route.path: _Target(route, by_endpoint[route.endpoint])
            for route in router.routes
            if isinstance(route, APIRoute) and route.endpoint in by_endpoint and route.methods == {"POST"}
        }
        if len(self.targets) != len(routes):
            raise ValueError("every direct route must be a POST route of the router")

    def claim(self, scope: Scope) -> Callable[[Scope, Receive, Send], Awaitable[None]] | None:
        target = self.targets.get(scope["path"])
        if target is None or scope["method"] != "POST" or self.app.dependency_overrides:
            return None
        options = _query_options(target.direct.options, scope.get("query_string", b""))
        if options is None:
            return None

        async def answer(scope: Scope, receive: Receive, send: Send) -> None:
            scope["route"], scope["endpoint"], scope["path_params"] = target.route, target.route.endpoint, {}
            request = Request(scope, receive, send)
            try:
                response = await self._call(target.direct, request, options)
            except Exception as exc:
                handler = self._handler_for(exc)
                if handler is None:
                    raise  # a bug: the server-error handler outside answers 500, as for any route
                response = await handler(request, exc)
            await response(scope, receive, send)

        return answer

    async def _call(self, direct: DirectRoute, request: Request, options: BaseModel) -> Response:
        """The route's dependencies in the order FastAPI solves them, then the route."""
        if request.app.state.settings.api_keys:
            await require_api_key(request)
        job = await direct.open_job(request, options)
        service = await get_service(request, await get_registry(request))
        return await direct.endpoint(job, service)

    def _handler_for(self, exc: Exception) -> Callable[[Request, Exception], Awaitable[Response]] | None:
        """The handler FastAPI's exception middleware would pick: the closest class in the error's MRO; the
        catch-all (500) handler is the server-error middleware's, outside the pipeline."""
        handlers = self.app.exception_handlers
        for kind in type(exc).__mro__:
            if kind is not Exception and kind in handlers:
                return handlers[kind]  # type: ignore[return-value]
        return None


@cache
def _defaults(options: type[BaseModel]) -> BaseModel:
    """The options of a request without a query string: one instance per type, only ever read
    (`merge_options` dumps what was set, and nothing is)."""
    return options()


def _query_options(options: type[BaseModel], query_string: bytes) -> BaseModel | None:
    """The query parameters as `options`, or None when FastAPI should read them (see the module docstring)."""
    if not query_string:
        return _defaults(options)
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    values = dict(pairs)
    if len(values) != len(pairs) or any(value == "" for value in values.values()):
        return None
    try:
        return options.model_validate(values)
    except ValidationError:
        return None
