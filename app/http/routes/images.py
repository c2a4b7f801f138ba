"""Images in, images out: /v1/denoise, /v1/super-resolve and /v1/reconstruct."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from app.engine.requests.jobs import ImageJob
from app.http.dependencies import ServiceDep
from app.http.direct import DirectRoute
from app.http.responses import IMAGE_RESPONSES, images_response
from app.http.routes.common import ERROR_RESPONSES, image_job, image_request_body
from app.http.schemas import DenoiseBody, DenoiseOptions, ImageBody, ImageOptions, SuperResolveBody, SuperResolveOptions

router = APIRouter(prefix="/v1", tags=["images"])
RESPONSES = {**IMAGE_RESPONSES, **ERROR_RESPONSES}
OPENAPI_BODY = image_request_body(ImageBody, ImageOptions)
DENOISE_BODY = image_request_body(DenoiseBody, DenoiseOptions)
SUPER_RESOLVE_BODY = image_request_body(SuperResolveBody, SuperResolveOptions)
open_image_job, open_denoise_job, open_super_resolve_job = (
    image_job(ImageOptions),
    image_job(DenoiseOptions),
    image_job(SuperResolveOptions),
)
ImageRequest = Annotated[ImageJob[ImageOptions], Depends(open_image_job)]
DenoiseRequest = Annotated[ImageJob[DenoiseOptions], Depends(open_denoise_job)]
SuperResolveRequest = Annotated[ImageJob[SuperResolveOptions], Depends(open_super_resolve_job)]


@router.post(
    "/denoise",
    summary="Remove noise from images",
    description="MNIST-domain models read 28x28 digits; other sizes are brought into the MNIST frame "
    "(X-Preprocessing: mnist-frame) unless preprocess=none. Models of photographs (domain 'natural') take any "
    "size up to the pixel cap (tiled inference; grayscale stays grayscale). Models of every noise level "
    "(photo-denoise-gray, photo-denoise-color) take `sigma` (0..75 on the 0..255 scale) or estimate it from each "
    "image, and answer with the level used in X-Noise-Sigma (comma-separated for several images) and in JSON's "
    "noise_sigma; a grayscale picture goes to the grayscale model of the pair and a colour one to the colour model.",
    responses=RESPONSES,
    openapi_extra=DENOISE_BODY,
    response_class=Response,
)
async def denoise(job: DenoiseRequest, service: ServiceDep) -> Response:
    images = await service.denoise(job)
    return await images_response(images, job.options.response_format, job.upload.source, service.metrics, job.route)


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
async def super_resolve(job: SuperResolveRequest, service: ServiceDep) -> Response:
    images = await service.super_resolve(job)
    return await images_response(images, job.options.response_format, job.upload.source, service.metrics, job.route)


@router.post(
    "/reconstruct",
    summary="Reconstruct images and score them (reconstruction error, usable as an anomaly score)",
    description="JSON answers carry reconstruction_error per image; PNG answers carry it in the "
    "X-Reconstruction-Error header (comma-separated for a grid).",
    responses=RESPONSES,
    openapi_extra=OPENAPI_BODY,
    response_class=Response,
)
async def reconstruct(job: ImageRequest, service: ServiceDep) -> Response:
    images = await service.reconstruct(job)
    return await images_response(images, job.options.response_format, job.upload.source, service.metrics, job.route)


# These routes do the same few steps for every request: the request pipeline answers them without FastAPI's
# routing and dependency solving when it can (app.http.direct), by calling the functions above.
DIRECT_ROUTES = (
    DirectRoute(denoise, open_denoise_job, DenoiseOptions),
    DirectRoute(super_resolve, open_super_resolve_job, SuperResolveOptions),
    DirectRoute(reconstruct, open_image_job, ImageOptions),
)
