"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from app.http.dependencies import MetricsDep, StartedServiceDep
from app.http.schemas import ErrorResponse, Health, Readiness
from app.http.security import require_metrics_key

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    summary="Readiness: the default models are loaded and have run a forward pass",
    responses={503: {"model": Readiness, "description": "not ready, with the reasons"}},
)
async def readyz(request: Request, service: StartedServiceDep) -> JSONResponse:
    if service is None:
        body = Readiness(status="not_ready", reasons=["the model registry is not loaded yet"])
        return JSONResponse(body.model_dump(), status_code=503)
    reasons, models = service.readiness()
    if request.app.state.drain.draining:  # first, so that load balancers stop sending at once
        reasons.insert(0, "shutting down: draining the requests in flight")
    body = Readiness(status="not_ready" if reasons else "ready", reasons=reasons, models=models)
    return JSONResponse(body.model_dump(), status_code=503 if reasons else 200)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
        401: {"model": ErrorResponse, "description": "API key needed (AE_METRICS_REQUIRE_KEY with AE_API_KEYS)"},
    },
    dependencies=[Depends(require_metrics_key)],
)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
