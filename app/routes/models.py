"""The model listing: what is served, in which state, and what its card measured."""

from __future__ import annotations

from fastapi import APIRouter, Path

from app.dependencies import RegistryDep
from app.schemas import ErrorResponse, ModelInfo, ModelList

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", summary="Every checkpoint found, loaded or not, with its card")
async def list_models(registry: RegistryDep) -> ModelList:
    return ModelList(data=[ModelInfo(**registry.describe(entry)) for _, entry in sorted(registry.entries.items())])


@router.get("/{name}", summary="One model's card and state", responses={404: {"model": ErrorResponse}})
async def get_model(registry: RegistryDep, name: str = Path(description="checkpoint folder name")) -> ModelInfo:
    return ModelInfo(**registry.describe(registry.entry(name)))
