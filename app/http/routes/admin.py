"""Management routes: load, unload, replace (reload from its folder) and rescan models. Mounted only
when `AE_ADMIN_API_KEY` is set (app.main), and then only with that key (app.http.security).

They never take a path or a URL: a name must be one the registry found by scanning the checkpoints
directory (app.engine.models.registry.ModelRegistry.scan), so nothing outside that directory can be loaded.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel

from app.errors import ModelNotFound
from app.http.dependencies import ServiceDep
from app.http.routes.common import ERROR_RESPONSES
from app.http.schemas import ErrorResponse, ModelInfo
from app.http.security import require_admin_key
from models.checkpoint import MODEL_NAME_PATTERN, MODEL_NAME_RULE

router = APIRouter(
    prefix="/v1/models",
    tags=["management"],
    dependencies=[Depends(require_admin_key)],
    responses={401: {"model": ErrorResponse, "description": "missing or wrong admin key"}},
)
NamePath = Path(description="a checkpoint folder name from GET /v1/models", max_length=128)


class ReloadResult(BaseModel):
    added: list[str]
    removed: list[str]
    models: list[str]


def checkpoint_name(name: str) -> str:
    """Only a name a checkpoint folder may have (models.checkpoint) goes further; the service then looks it up."""
    if not MODEL_NAME_PATTERN.match(name):
        raise ModelNotFound(f"model names are checkpoint folder names: {MODEL_NAME_RULE}", param="name")
    return name


@router.post("/reload", summary="Rescan the checkpoints directory", responses=ERROR_RESPONSES)
async def reload_models(service: ServiceDep) -> ReloadResult:
    added, removed = await service.reload_models()
    return ReloadResult(added=added, removed=removed, models=[model.name for model in service.models()])


@router.post("/{name}/load", summary="Load a model and run its warm-up pass", responses=ERROR_RESPONSES)
async def load_model(service: ServiceDep, name: str = NamePath) -> ModelInfo:
    return await service.load_model(checkpoint_name(name))


@router.post(
    "/{name}/reload",
    summary="Serve the model's folder as it is now (new weights swap in once warmed up; no request fails)",
    description="Write the new model.safetensors and config.json into the model's folder first (each by a "
    "rename, so that no half-written file is read). A loaded model keeps serving until its replacement is "
    "built, verified (sha256) and has run its warm-up pass; requests already queued finish on the old weights. "
    "A broken replacement, or one that changes the model's tasks, input, scale or latent size, is refused with "
    "409 and the old weights keep serving. `sha256` in the answer (and in GET /v1/models) is what serves.",
    responses={**ERROR_RESPONSES, 409: {"model": ErrorResponse, "description": "replacement refused"}},
)
async def reload_model(service: ServiceDep, name: str = NamePath) -> ModelInfo:
    return await service.replace_model(checkpoint_name(name))


@router.post("/{name}/unload", summary="Unload a model (it loads again on first use)", responses=ERROR_RESPONSES)
async def unload_model(service: ServiceDep, name: str = NamePath) -> ModelInfo:
    return await service.unload_model(checkpoint_name(name))
