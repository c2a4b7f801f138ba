"""The variational autoencoder: sample, decode, encode, interpolate and draw the latent manifold."""

from __future__ import annotations

import asyncio
from typing import Annotated

import torch
from fastapi import APIRouter, Depends, Query, Request, Response

from app.errors import InvalidRequest, ValidationFailed
from app.imaging import encode_png, tensor_to_image
from app.inputs import merge_options, read_upload, require_images
from app.responses import IMAGE_RESPONSES, ImageResult, choose_format, image_response
from app.routes.common import ERROR_RESPONSES, image_request_body, json_body, json_request_body, note_request
from app.schemas import (
    DecodeRequest,
    EncodeBody,
    EncodeOptions,
    EncodeResponse,
    InterpolateBody,
    InterpolateOptions,
    ModelName,
    Posterior,
    ResponseFormat,
    SampleRequest,
)
from app.service import Service, ServiceDep

router = APIRouter(prefix="/v1/vae", tags=["vae"])
IMAGE_OUT = {**IMAGE_RESPONSES, **ERROR_RESPONSES}
QueryModel = Annotated[ModelName, Query(description="checkpoint name; a JSON field of the same name wins")]
# JSON bodies read by a dependency, so that they are parsed only after the API key is checked.
SampleBody = Annotated[SampleRequest, Depends(json_body(SampleRequest))]
DecodeBody = Annotated[DecodeRequest, Depends(json_body(DecodeRequest))]


def check_limit(value: int, limit: int, param: str) -> None:
    """Limits from settings are checked before any work (a 422 naming the field)."""
    if value > limit:
        raise ValidationFailed(f"{param} is {value}; the limit is {limit}", param=param)


async def images_response(
    request: Request,
    service: Service,
    model: str,
    images: list[torch.Tensor],
    requested: ResponseFormat,
    seed: int | None = None,
) -> Response:
    """Generated images come back as JSON unless `png` is asked for (then one image or one grid)."""
    results = [ImageResult(image) for image in images]
    response_format = choose_format(requested, "json", len(results))
    with service.metrics.stage("encode", request.url.path):
        return await asyncio.to_thread(image_response, model, results, response_format, seed)


@router.post(
    "/sample",
    summary="Draw n images from the prior; the same seed gives the same images",
    responses=IMAGE_OUT,
    openapi_extra=json_request_body(SampleRequest),
    response_class=Response,
)
async def sample(request: Request, body: SampleBody, service: ServiceDep, model: QueryModel = None) -> Response:
    check_limit(body.n, service.settings.max_samples, "n")
    entry = service.registry.resolve(body.model or model, "vae", "vae")
    note_request(request, entry.name, body.n)
    images, seed = await service.sample(entry, body.n, body.seed, body.temperature)
    return await images_response(request, service, entry.name, images, body.response_format, seed)


@router.post(
    "/decode",
    summary="Decode latent vectors into images",
    responses=IMAGE_OUT,
    openapi_extra=json_request_body(DecodeRequest),
    response_class=Response,
)
async def decode(request: Request, body: DecodeBody, service: ServiceDep, model: QueryModel = None) -> Response:
    check_limit(len(body.latents), service.settings.max_images_per_request, "latents")
    entry = service.registry.resolve(body.model or model, "vae", "vae")
    note_request(request, entry.name, len(body.latents))
    images = await service.decode(entry, latents_tensor(body.latents))
    return await images_response(request, service, entry.name, images, body.response_format)


@router.post(
    "/encode",
    summary="Images -> the posterior's means and log-variances",
    responses=ERROR_RESPONSES,
    openapi_extra=image_request_body(EncodeBody, EncodeOptions),
)
async def encode(request: Request, query: Annotated[EncodeOptions, Query()], service: ServiceDep) -> EncodeResponse:
    upload = await read_upload(request, service.settings)
    options = merge_options(EncodeOptions, query, upload.fields)
    require_images(upload)
    entry = service.registry.resolve(options.model, "vae", "vae")
    note_request(request, entry.name, len(upload.blobs))
    means, log_variances, preprocessing = await service.encode(entry, upload, options.preprocess, request.url.path)
    data = [
        Posterior(index=i, mean=means[i].tolist(), log_variance=log_variances[i].tolist(), preprocessing=kind)
        for i, kind in enumerate(preprocessing)
    ]
    return EncodeResponse(model=entry.name, data=data)


@router.post(
    "/interpolate",
    summary="A straight path in latent space between two images (their posterior means) or two latents",
    description="Send two images (multipart, or JSON 'images') or JSON 'latents': [[...], [...]]; "
    "steps images come back, both ends included.",
    responses=IMAGE_OUT,
    openapi_extra=image_request_body(InterpolateBody, InterpolateOptions),
    response_class=Response,
)
async def interpolate(request: Request, query: Annotated[InterpolateOptions, Query()], service: ServiceDep) -> Response:
    upload = await read_upload(request, service.settings)
    options = merge_options(InterpolateOptions, query, upload.fields)
    check_limit(options.steps, service.settings.max_steps, "steps")
    entry = service.registry.resolve(options.model, "vae", "vae")
    if (options.latents is None) == (len(upload.blobs) == 0):
        raise InvalidRequest("send either two images or two 'latents', not both and not neither", param="images")
    if options.latents is not None:
        if len(options.latents) != 2:
            raise ValidationFailed(f"'latents' needs exactly two vectors; got {len(options.latents)}", param="latents")
        start, end = latents_tensor(options.latents)
    else:
        if len(upload.blobs) != 2:
            raise InvalidRequest(f"interpolation needs exactly two images; got {len(upload.blobs)}", param="image")
        means, _, _ = await service.encode(entry, upload, options.preprocess, request.url.path)
        start, end = means
    note_request(request, entry.name, options.steps)
    images = await service.interpolate(entry, start, end, options.steps)
    return await images_response(request, service, entry.name, images, options.response_format)


@router.get(
    "/manifold",
    summary="One PNG grid over a 2-D latent space",
    description="size x size decoded images for z1 (columns, left to right) and z2 (rows, top to bottom "
    "from +range to -range) evenly spaced in [-range, range]. Needs a model with latent size 2.",
    responses={200: {"content": {"image/png": {}}, "description": "the grid"}, **ERROR_RESPONSES},
    response_class=Response,
)
async def manifold(
    request: Request,
    service: ServiceDep,
    model: QueryModel = None,
    size: Annotated[int, Query(ge=1, description="images per side")] = 15,
    extent: Annotated[
        float, Query(alias="range", gt=0, le=10, allow_inf_nan=False, description="z from -range to +range")
    ] = 2.0,
) -> Response:
    check_limit(size, service.settings.max_manifold_size, "size")
    entry = service.registry.resolve(model, "manifold", "vae")
    note_request(request, entry.name, size * size)
    grid = await service.manifold(entry, size, extent)  # (C, size * H, size * W)
    with service.metrics.stage("encode", request.url.path):
        png = await asyncio.to_thread(lambda: encode_png(tensor_to_image(grid)))
    return Response(png, media_type="image/png", headers={"X-Model": entry.name, "X-Grid": f"{size}x{size}"})


def latents_tensor(latents: list[list[float]]) -> torch.Tensor:
    """JSON vectors -> (n, D); they must all have the same length."""
    lengths = {len(vector) for vector in latents}
    if len(lengths) != 1:
        raise ValidationFailed(f"latent vectors differ in length: {sorted(lengths)}", param="latents")
    return torch.tensor(latents, dtype=torch.float32)
