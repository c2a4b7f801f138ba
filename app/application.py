"""The application factory: `create_app(settings)` builds the FastAPI app (routes, error handlers, middleware);
`app.main` builds the one `uvicorn app.main:app` serves, the Ray gateway (ae_ray.gateway) its own.

Start-up (the lifespan) is the model side's (`app.engine.startup.serving`: scan, preload, warm up; /readyz
answers 200 only after that). Under uvicorn, SIGTERM and SIGINT then start a drain (app.process.drain)
instead of an abrupt stop.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from app.engine.models.registry import ModelRegistry
from app.engine.startup import serving
from app.http.admission import AdmissionControl
from app.http.direct import DirectRoutes
from app.http.error_handlers import install_error_handlers
from app.http.middleware import RefusalSummary, RequestPipeline
from app.http.routes import admin, embeddings, health, images, latent_map, models, vae
from app.http.routes.playground import playground_router
from app.http.schemas import ErrorResponse
from app.http.security import install_cors, require_api_key
from app.observability import Metrics, configure_logging
from app.oip import rest as oip_rest
from app.oip.grpc_server import start_grpc_server
from app.process.drain import Drain
from app.process.front_door import FrontDoor
from app.settings import Settings, settings_from_environment

logger = logging.getLogger("app.application")
UNAUTHORIZED: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorResponse, "description": "missing or wrong API key (AE_API_KEYS)"}
}

# The routes that run models: admission control (app.http.admission) bounds their requests in flight.
# Listing and managing models (/v1/models) and the probes stay outside it, so they answer under overload.
MODEL_ROUTERS = (images.router, embeddings.router, vae.router)
# The default key (AE_DEFAULT_MODELS, app.engine.models.defaults) of the model each model route runs when a
# request names none: admission counts such a request against that model from the start (app.http.admission).
ROUTE_DEFAULT_KEYS = {
    "/v1/denoise": "denoise",
    "/v1/super-resolve": "super_resolve",
    "/v1/reconstruct": "reconstruct",
    "/v1/embeddings": "embed",
    "/v1/vae/sample": "vae",
    "/v1/vae/decode": "vae",
    "/v1/vae/encode": "vae",
    "/v1/vae/interpolate": "vae",
    "/v1/vae/restyle": "conditional_vae",
    "/v1/vae/manifold": "manifold",
}
# How long a stopping gRPC server lets the calls it has finish: as long as a request may wait for its batch.
GRPC_STOP_GRACE_S = 30.0


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    async with serving(ModelRegistry(settings, observer=app.state.metrics), settings) as registry:
        app.state.registry = registry
        grpc_server = None
        if settings.grpc_port:  # the Open Inference Protocol over gRPC, on this event loop (app.oip.grpc_server)
            grpc_server = await start_grpc_server(app.state, settings.host, settings.grpc_port)
            # It stops accepting calls when the drain ends, with HTTP, and finishes the calls it has.
            app.state.drain.on_stop(lambda: grpc_server.stop(GRPC_STOP_GRACE_S))
        # After start-up, so that a signal during start-up stops the process as uvicorn does.
        if app.state.drain.install():
            logger.info("SIGTERM and SIGINT drain for %g s before shutting down", settings.shutdown_drain_s)
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(GRPC_STOP_GRACE_S)
            app.state.registry = None


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
    app.include_router(oip_rest.probes)  # the Open Inference Protocol's probes, likewise
    keyed = {"dependencies": [Depends(require_api_key)], "responses": UNAUTHORIZED} if settings.api_keys else {}
    for router in (models.router, images.router, embeddings.router, vae.router, latent_map.router, oip_rest.router):
        app.include_router(router, **keyed)  # type: ignore[arg-type]
    if settings.playground:  # the page and its files need no key: it asks for one to call the API
        app.include_router(playground_router())
    if settings.admin_api_key:  # without an admin key the management routes do not exist (404)
        app.include_router(admin.router)
    install_cors(app, settings)
    # Admission control (app.http.admission) is shared by the request pipeline, which runs it for the model
    # routes, by the HTTP protocol under ae-serve (app.process.connections), which asks it before it builds a
    # request at all and refuses there what would be refused anyway, and by the gRPC server (app.oip).
    model_routes = {getattr(route, "path", "") for router in MODEL_ROUTERS for route in router.routes}
    defaults = settings.default_models.as_dict()
    app.state.admission = AdmissionControl(
        budget_s=settings.queue_budget_ms / 1000,
        deadline_s=settings.batch_timeout_s,
        max_images=settings.batch_max_queue_images,
        paths=model_routes,
        min_requests=2 * settings.batch_max_size,
        known_models=lambda: app.state.registry.entries if app.state.registry is not None else (),
        path_model=oip_rest.infer_path_model,
        route_default=lambda path: defaults.get(ROUTE_DEFAULT_KEYS.get(path, "")),
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
        # The image routes without FastAPI's per-request machinery (app.http.direct); not under CORS, whose
        # middleware runs inside the pipeline.
        direct=DirectRoutes(app, images.router, images.DIRECT_ROUTES)
        if settings.direct_path and not settings.cors_origins
        else None,
    )
    return app
