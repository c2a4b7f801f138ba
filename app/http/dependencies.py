"""What routes receive by dependency injection; tests swap any of these with `app.dependency_overrides`.

They are `async def` although none of them awaits: FastAPI runs a plain `def` dependency in a worker
thread, and one thread hop per dependency per request cost more than the rest of the route's Python work.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.engine.models.registry import ModelRegistry
from app.engine.service import Service
from app.errors import NotReady, UnsupportedMediaType
from app.http.request_record import record_of
from app.observability import Metrics
from app.settings import Settings


def app_settings(request: Request) -> Settings:
    """The settings the app was created with (`create_app(settings)`): the one way request code reads them."""
    settings: Settings = request.app.state.settings
    return settings


async def get_settings(request: Request) -> Settings:
    return app_settings(request)


async def get_registry(request: Request) -> ModelRegistry:
    registry = getattr(request.app.state, "registry", None)
    if registry is None:  # only between process start and the end of the lifespan's start-up
        raise NotReady("the model registry is not loaded yet")
    return registry


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_service(request: Request, registry: Annotated[ModelRegistry, Depends(get_registry)]) -> Service:
    # Settings and metrics straight from the app: each sub-dependency FastAPI resolves costs as much
    # as a small route's own work. The registry stays a dependency, so tests can swap it. The service
    # accounts the request (its model and image count) to the request's record.
    return Service(registry, app_settings(request), request.app.state.metrics, record_of(request.scope))


async def get_started_service(request: Request) -> Service | None:
    """The service once start-up has built the registry, else None (for the probes, which answer anyway)."""
    registry = getattr(request.app.state, "registry", None)
    return None if registry is None else Service(registry, app_settings(request), request.app.state.metrics)


async def require_json(request: Request) -> None:
    """Routes that read a JSON body refuse other content types with a 415 (curl -d sends a form otherwise)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise UnsupportedMediaType(
            f"send this route a JSON body with Content-Type: application/json, not {kind or 'none'!r}",
            param="content-type",
        )


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ServiceDep = Annotated[Service, Depends(get_service)]
StartedServiceDep = Annotated[Service | None, Depends(get_started_service)]
