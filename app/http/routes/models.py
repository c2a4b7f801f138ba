"""The model listing: what is served, in which state, and what its card measured."""

from __future__ import annotations

from fastapi import APIRouter, Path

from app.http.dependencies import ServiceDep
from app.http.schemas import ErrorResponse, ModelInfo, ModelList

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", summary="Every checkpoint found, loaded or not, with its card")
async def list_models(service: ServiceDep) -> ModelList:
    return ModelList(data=service.models())


@router.get("/{name}", summary="One model's card and state", responses={404: {"model": ErrorResponse}})
async def get_model(service: ServiceDep, name: str = Path(description="checkpoint folder name")) -> ModelInfo:
    return service.model(name)
