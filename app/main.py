"""The application: `uvicorn app.main:app`, or `create_app(settings)` in tests.

Start-up (the lifespan) scans the checkpoints, loads the models to preload (each with its execution
plan, measured and warmed up for the batcher's batch sizes: models.runtime.execution), and runs a real forward
pass through every default model's batchers; /readyz answers 200 only after that. A broken
checkpoint is listed as unavailable and never stops the others. Under uvicorn, SIGTERM and SIGINT then
start a drain (app.process.drain) instead of an abrupt stop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import Depends, FastAPI

from app.engine.model_choice import ModelChoice
from app.engine.registry import ModelRegistry
from app.errors import ServiceError
from app.http.admission import AdmissionControl
from app.http.error_handlers import install_error_handlers
from app.http.middleware import RefusalSummary, RequestPipeline
from app.http.routes import admin, embeddings, health, images, latent_map, models, vae
from app.http.routes.playground import playground_router
from app.http.schemas import ErrorResponse
from app.http.security import install_cors, require_api_key
from app.observability import Metrics, configure_logging
from app.process.drain import Drain
from app.process.front_door import FrontDoor
from app.settings import Settings, settings_from_environment
from models.runtime.execution import available_cpus
from models.runtime.tasks import tasks_of_default

logger = logging.getLogger("app.main")
UNAUTHORIZED: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorResponse, "description": "missing or wrong API key (AE_API_KEYS)"}
}

# The routes that run models: admission control (app.http.admission) bounds their requests in flight.
# Listing and managing models (/v1/models) and the probes stay outside it, so they answer under overload.
MODEL_ROUTERS = (images.router, embeddings.router, vae.router)


def torch_threads(settings: Settings) -> int:
    """AE_TORCH_THREADS, else this process's share of the cores it may use (affinity, cgroup quota) among
    AE_WORKERS processes: more threads than cores only fight each other."""
    if settings.torch_threads:
        return settings.torch_threads
    return max(1, available_cpus() // settings.workers)


async def start_registry(settings: Settings, metrics: Metrics) -> ModelRegistry:
    """A registry of the checkpoints, ready to serve (see `prepare_registry`)."""
    registry = ModelRegistry(settings, observer=metrics)
    await prepare_registry(registry, settings)
    return registry


async def prepare_registry(registry: ModelRegistry, settings: Settings) -> None:
    """Scan the checkpoints, load the models to preload, warm up the default models, and check the weights
    of the others. Each weights file is hashed once: when it loads, or else when it is checked. The Ray
    gateway (ae_ray.gateway) prepares its remote registry the same way."""
    choice = ModelChoice(registry, settings.default_models)
    registry.scan()
    for name in choice.preload_names(settings.preload):
        try:
            await registry.load(name)
        except ServiceError as exc:  # unknown or broken: listed as such, the others still serve
            logger.error("could not preload %s: %s", name, exc.message)
    await warm_up(registry, choice)  # loads the default models too
    # The weights of the models not loaded by now are checked without loading them (loading checks its own).
    unloaded = [name for name, entry in registry.entries.items() if entry.state != "loaded"]
    await asyncio.to_thread(registry.verify, unloaded)


async def warm_up(registry: ModelRegistry, choice: ModelChoice) -> None:
    """One real forward pass per task of each default model (the tasks of its default key), through its
    batchers; a model that fails it is listed as unavailable and the others still serve."""
    for key, name in choice.defaults.as_dict().items():
        entry = registry.entries.get(name)
        if entry is None or entry.state == "unavailable" or entry.card is None:
            continue
        try:
            await registry.warm_up(name, tasks_of_default(key))
        except Exception as exc:
            logger.error("model %s failed its warm-up: %s", name, exc)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    torch.set_num_threads(torch_threads(settings))
    started = time.perf_counter()
    registry = await start_registry(settings, app.state.metrics)
    # What start-up built (modules, models, the registry) lives as long as the process. Freezing it
    # takes it out of the garbage collector's sight, so the full collections that requests trigger no
    # longer walk it: those walks paused the event loop for tens of milliseconds, and made the slowest
    # 1% of answers three times slower (docs/benchmarks.md).
    gc.freeze()
    app.state.registry = registry
    # After start-up, so that a signal during start-up stops the process as uvicorn does.
    if app.state.drain.install():
        logger.info("SIGTERM and SIGINT drain for %g s before shutting down", settings.shutdown_drain_s)
    logger.info(
        "service started in %.1f s with %d models on %s, %d torch threads",
        time.perf_counter() - started,
        len(registry.entries),
        registry.device,
        torch.get_num_threads(),
    )
    try:
        yield
    finally:
        app.state.registry = None
        await registry.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or settings_from_environment()
    configure_logging(settings.log_level)
    app = FastAPI(
        title="Autoencoder inference service",
        version="1.0.0",
        description="Denoising, super-resolution, embeddings and VAE sampling with trained autoencoders. "
        'Errors are JSON: {"error": {"type", "message", "param"}}.',
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.drain = Drain(settings.shutdown_drain_s)
    app.state.registry = None
    install_error_handlers(app)
    app.include_router(health.router)  # probes never need a key; /metrics checks its own (AE_METRICS_REQUIRE_KEY)
    keyed = {"dependencies": [Depends(require_api_key)], "responses": UNAUTHORIZED} if settings.api_keys else {}
    for router in (models.router, images.router, embeddings.router, vae.router, latent_map.router):
        app.include_router(router, **keyed)  # type: ignore[arg-type]
    if settings.playground:  # the page and its files need no key: it asks for one to call the API
        app.include_router(playground_router())
    if settings.admin_api_key:  # without an admin key the management routes do not exist (404)
        app.include_router(admin.router)
    install_cors(app, settings)
    # Admission control (app.http.admission) is shared by the request pipeline, which runs it for the model
    # routes, and by the HTTP protocol under ae-serve (app.process.connections), which asks it before it builds a
    # request at all and refuses there what would be refused anyway.
    model_routes = {getattr(route, "path", "") for router in MODEL_ROUTERS for route in router.routes}
    app.state.admission = AdmissionControl(
        budget_s=settings.queue_budget_ms / 1000,
        deadline_s=settings.batch_timeout_s,
        max_images=settings.batch_max_queue_images,
        paths=model_routes,
        min_requests=2 * settings.batch_max_size,
        known_models=lambda: app.state.registry.entries if app.state.registry is not None else (),
    )
    app.state.refusals = RefusalSummary(app.state.metrics)
    app.state.front_door = FrontDoor(app.state.admission, app.state.refusals, app.state.drain)
    # The one middleware, added last so it runs first: the request's record and id, Connection: close while
    # draining, the body cap and deadline, admission, the access log and metrics (app.http.middleware).
    app.add_middleware(
        RequestPipeline,
        metrics=app.state.metrics,
        admission=app.state.admission,
        refusals=app.state.refusals,
        drain=app.state.drain,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
    )
    return app


app = create_app()
