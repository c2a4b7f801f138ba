"""Images in, images out: /v1/denoise, /v1/super-resolve and /v1/reconstruct."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.inputs import merge_options, read_upload, require_images
from app.offload import run_cpu_work
from app.registry import TaskFunction
from app.responses import IMAGE_RESPONSES, choose_format, image_response
from app.routes.common import ERROR_RESPONSES, image_request_body, note_request
from app.schemas import ImageBody, ImageOptions, SuperResolveBody, SuperResolveOptions
from app.service import Service, ServiceDep

router = APIRouter(prefix="/v1", tags=["images"])
RESPONSES = {**IMAGE_RESPONSES, **ERROR_RESPONSES}
OPENAPI_BODY = image_request_body(ImageBody, ImageOptions)
SUPER_RESOLVE_BODY = image_request_body(SuperResolveBody, SuperResolveOptions)
QueryOptions = Annotated[ImageOptions, Query()]
SuperResolveQuery = Annotated[SuperResolveOptions, Query()]


async def transform(request: Request, query: ImageOptions, service: Service, task: TaskFunction) -> Response:
    """Decode the images, run them through the model's `task`, and encode the results."""
    upload = await read_upload(request, service.settings)
    options = merge_options(type(query), query, upload.fields)
    require_images(upload)
    if isinstance(options, SuperResolveOptions):  # `scale` may choose the model
        entry = service.registry.resolve_super_resolution(options.model, options.scale)
    else:
        entry = service.registry.resolve(options.model, task, task)
    note_request(request, entry.name, len(upload.blobs))
    results = await service.transform(entry, upload, task, options.preprocess, request.url.path)
    response_format = choose_format(options.response_format, upload.source, len(results))
    with service.metrics.stage("encode", request.url.path):
        pixels = sum(result.image[0].numel() for result in results)
        return await run_cpu_work(lambda: image_response(entry.name, results, response_format), pixels)


@router.post(
    "/denoise",
    summary="Remove noise from images",
    description="MNIST-domain models read 28x28 digits; other sizes are brought into the MNIST frame "
    "(X-Preprocessing: mnist-frame) unless preprocess=none. Models of photographs (domain 'natural') take any "
    "size up to the pixel cap (tiled inference; colour channel by channel; grayscale stays grayscale).",
    responses=RESPONSES,
    openapi_extra=OPENAPI_BODY,
    response_class=Response,
)
async def denoise(request: Request, query: QueryOptions, service: ServiceDep) -> Response:
    return await transform(request, query, service, "denoise")


@router.post(
    "/super-resolve",
    summary="Upscale images by the model's factor",
    description="MNIST super-resolution models take their trained input size (14x14 for x2, 7x7 for x4); "
    "another size gets a 400 naming the expected one. Models of photographs (domain 'natural') take any size "
    "whose answer stays within the pixel cap (width x height x scale^2 <= AE_MAX_PIXELS, else a 413); tiled "
    "inference; RGB: luminance by the model, colour bicubic; grayscale stays grayscale. `scale` picks a model by "
    "its factor.",
    responses=RESPONSES,
    openapi_extra=SUPER_RESOLVE_BODY,
    response_class=Response,
)
async def super_resolve(request: Request, query: SuperResolveQuery, service: ServiceDep) -> Response:
    return await transform(request, query, service, "super-resolve")


@router.post(
    "/reconstruct",
    summary="Reconstruct images and score them (reconstruction error, usable as an anomaly score)",
    description="JSON answers carry reconstruction_error per image; PNG answers carry it in the "
    "X-Reconstruction-Error header (comma-separated for a grid).",
    responses=RESPONSES,
    openapi_extra=OPENAPI_BODY,
    response_class=Response,
)
async def reconstruct(request: Request, query: QueryOptions, service: ServiceDep) -> Response:
    return await transform(request, query, service, "reconstruct")
