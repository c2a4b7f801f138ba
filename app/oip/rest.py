"""The Open Inference Protocol over REST, under /v2: what Triton's and KServe's HTTP clients call.

- `GET /v2/health/live`, `GET /v2/health/ready`: probes, no key (as /healthz and /readyz);
- `GET /v2`: the server's metadata; `GET /v2/models/{name}[/versions/{version}]`: a model's metadata;
  `GET /v2/models/{name}[/versions/{version}]/ready`; `POST /v2/models/{name}[/versions/{version}]/infer`
  with JSON tensors or the binary-data extension (app.oip.tensors). These take the API key of /v1.
Errors are the protocol's `{"error": "<message>"}`, with the service's `type` and `param` beside it
(app.http.error_handlers answers every /v2 path in that shape). The infer route is under admission control like the
/v1 model routes (`infer_path_model` tells the middleware the model a path names).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse

from app.http.admission import PathModel
from app.http.dependencies import ServiceDep, StartedServiceDep
from app.oip.grpc_server import EXTENSIONS, SERVER_NAME, SERVER_VERSION
from app.oip.inference import infer
from app.oip.model_map import PLATFORM, VERSION, ProtocolModel, find, is_ready
from app.oip.tensors import HEADER_LENGTH, read_rest_request, write_rest_response

PREFIX = "/v2"
INFER_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)(?P<versioned>/versions/[^/]+)?/infer$")
INFER_ROUTE = "/v2/models/{model_name}/infer"
VERSIONED_INFER_ROUTE = "/v2/models/{model_name}/versions/{model_version}/infer"

# Not in /openapi.json: the protocol defines these routes and their bodies (binary ones too), and its clients
# (tritonclient, the kserve SDK) read no OpenAPI; docs/api.md describes them.
probes = APIRouter(prefix=PREFIX, tags=["open inference protocol"], include_in_schema=False)
router = APIRouter(prefix=PREFIX, tags=["open inference protocol"], include_in_schema=False)


def infer_path_model(path: str) -> PathModel | None:
    """For admission control: the checkpoint an infer path names (`{model}.{task}` -> model), else None."""
    match = INFER_PATH.match(path)
    if match is None:
        return None
    name = match["name"]
    return PathModel(name.rpartition(".")[0] or name, VERSIONED_INFER_ROUTE if match["versioned"] else INFER_ROUTE)


@probes.get("/health/live", summary="Liveness (Open Inference Protocol)")
async def live() -> dict[str, bool]:
    return {"live": True}


@probes.get("/health/ready", summary="Readiness (Open Inference Protocol): 200 ready, 503 not")
async def ready(request: Request, service: StartedServiceDep) -> JSONResponse:
    ok = service is not None and not service.readiness()[0] and not request.app.state.drain.draining
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("", summary="Server metadata (Open Inference Protocol)")
async def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}


@router.get("/models/{model_name}", summary="Model metadata: its input and output tensors")
@router.get("/models/{model_name}/versions/{model_version}", summary="Model metadata of one version")
async def model_metadata(model_name: str, service: ServiceDep, model_version: str = "") -> dict[str, Any]:
    return metadata(find(service.registry, model_name, model_version))


@router.get("/models/{model_name}/ready", summary="Model readiness: 200 ready, 503 not")
@router.get("/models/{model_name}/versions/{model_version}/ready", summary="Readiness of one version")
async def model_ready(model_name: str, service: ServiceDep, model_version: str = "") -> JSONResponse:
    model = find(service.registry, model_name, model_version)
    ok = is_ready(service.registry.entries.get(model.model))
    return JSONResponse({"name": model.name, "ready": ok}, status_code=200 if ok else 503)


@router.post(INFER_ROUTE.removeprefix(PREFIX), summary="Inference: JSON tensors or the binary-data extension")
@router.post(VERSIONED_INFER_ROUTE.removeprefix(PREFIX), summary="Inference on one version")
async def model_infer(
    request: Request,
    model_name: str,
    service: ServiceDep,
    model_version: str = "",
    header_length: Annotated[str | None, Header(alias=HEADER_LENGTH)] = None,
) -> Response:
    model = find(service.registry, model_name, model_version)
    job = read_rest_request(await request.body(), header_length)
    outputs = await infer(service, model, job, INFER_ROUTE)  # the service accounts to the request's record
    body, headers = write_rest_response(model.name, VERSION, job.request_id, outputs)
    return Response(body, headers=headers)


def metadata(model: ProtocolModel) -> dict[str, Any]:
    def described(specs: tuple[Any, ...]) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]

    return {
        "name": model.name,
        "versions": [VERSION],
        "platform": PLATFORM,
        "inputs": described(model.inputs),
        "outputs": described(model.outputs),
    }
