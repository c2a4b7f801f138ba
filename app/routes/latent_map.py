"""The latent map of a 2-D VAE as JSON: the playground draws it, coloured by digit."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.latent_maps import served_latent_map
from app.routes.common import ERROR_RESPONSES, note_request
from app.schemas import LatentMapResponse, ModelName
from app.service import ServiceDep

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
    entry = service.registry.resolve(model, "manifold", "vae")
    note_request(request, entry.name, 0)
    found = await asyncio.to_thread(served_latent_map, entry)
    return LatentMapResponse(
        model=entry.name, source=found.source, count=len(found.labels), x=found.x, y=found.y, labels=found.labels
    )
