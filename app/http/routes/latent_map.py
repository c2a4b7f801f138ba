"""The latent map of a 2-D VAE as JSON: the playground draws it, coloured by digit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.http.dependencies import ServiceDep
from app.http.routes.common import ERROR_RESPONSES
from app.http.schemas import LatentMapResponse, ModelName

router = APIRouter(prefix="/v1/vae", tags=["vae"])


@router.get(
    "/latent-map",
    summary="Where test images land in a 2-D latent space: their posterior means and classes",
    description="Computed once per checkpoint (python -m models.latent_map NAME) and kept beside its weights. "
    "Needs a model with a 2-D latent space (default: the manifold's model); 404 when it has no map.",
    responses=ERROR_RESPONSES,
)
async def latent_map(
    request: Request,
    service: ServiceDep,
    model: Annotated[ModelName, Query(description="a VAE with a 2-D latent space")] = None,
) -> LatentMapResponse:
    points = await service.vae_latent_map(model)
    return LatentMapResponse(
        model=points.model, source=points.source, count=len(points.labels), x=points.x, y=points.y, labels=points.labels
    )
