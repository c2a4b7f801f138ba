"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from app.dependencies import MetricsDep, StartedServiceDep
from app.schemas import ErrorResponse, Health, Readiness
from app.security import require_metrics_key

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    summary="Readiness: the default models are loaded and have run a forward pass",
    responses={503: {"model": Readiness, "description": "not ready, with the reasons"}},
)
async def readyz(service: StartedServiceDep) -> JSONResponse:
    if service is None:
        body = Readiness(status="not_ready", reasons=["the model registry is not loaded yet"])
        return JSONResponse(body.model_dump(), status_code=503)
    reasons, models = service.readiness()
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
