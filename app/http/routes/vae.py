"""The variational autoencoder: sample, decode, encode, interpolate and draw the latent manifold."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from app.engine.requests.jobs import ImageJob
from app.engine.scheduling.cpu_work import run_cpu_work
from app.http.dependencies import ServiceDep
from app.http.responses import IMAGE_RESPONSES, images_response
from app.http.routes.common import ERROR_RESPONSES, image_job, image_request_body, json_body, json_request_body
from app.http.schemas import (
    DecodeRequest,
    EncodeBody,
    EncodeOptions,
    EncodeResponse,
    InterpolateBody,
    InterpolateOptions,
    ModelName,
    Posterior,
    RestyleBody,
    RestyleOptions,
    SampleRequest,
)
from app.imaging.codecs import encode_png, tensor_to_image

router = APIRouter(prefix="/v1/vae", tags=["vae"])
IMAGE_OUT = {**IMAGE_RESPONSES, **ERROR_RESPONSES}
QueryModel = Annotated[ModelName, Query(description="checkpoint name; a JSON field of the same name wins")]
# JSON bodies read by a dependency, so that they are parsed only after the API key is checked.
SampleBody = Annotated[SampleRequest, Depends(json_body(SampleRequest))]
DecodeBody = Annotated[DecodeRequest, Depends(json_body(DecodeRequest))]
EncodeRequest = Annotated[ImageJob[EncodeOptions], Depends(image_job(EncodeOptions))]
# Interpolation takes two images or two latents, so a request without images is not refused up front.
RestyleRequest = Annotated[ImageJob[RestyleOptions], Depends(image_job(RestyleOptions))]
InterpolateRequest = Annotated[
    ImageJob[InterpolateOptions], Depends(image_job(InterpolateOptions, images_required=False))
]


@router.post(
    "/sample",
    summary="Draw n images from the prior; the same seed gives the same images",
    responses=IMAGE_OUT,
    openapi_extra=json_request_body(SampleRequest),
    response_class=Response,
)
async def sample(request: Request, body: SampleBody, service: ServiceDep, model: QueryModel = None) -> Response:
    images = await service.vae_sample(body.model or model, body.n, body.seed, body.temperature, body.label)
    return await images_response(images, body.response_format, "json", service.metrics, request.url.path)


@router.post(
    "/decode",
    summary="Decode latent vectors into images",
    responses=IMAGE_OUT,
    openapi_extra=json_request_body(DecodeRequest),
    response_class=Response,
)
async def decode(request: Request, body: DecodeBody, service: ServiceDep, model: QueryModel = None) -> Response:
    images = await service.vae_decode(body.model or model, body.latents, body.label)
    return await images_response(images, body.response_format, "json", service.metrics, request.url.path)


@router.post(
    "/encode",
    summary="Images -> the posterior's means and log-variances",
    responses=ERROR_RESPONSES,
    openapi_extra=image_request_body(EncodeBody, EncodeOptions),
)
async def encode(job: EncodeRequest, service: ServiceDep) -> EncodeResponse:
    posteriors = await service.vae_encode(job)
    data = [
        Posterior(index=i, mean=mean.tolist(), log_variance=log_variance.tolist(), preprocessing=kind)
        for i, (mean, log_variance, kind) in enumerate(
            zip(posteriors.means, posteriors.log_variances, posteriors.preprocessing, strict=True)
        )
    ]
    return EncodeResponse(model=posteriors.model, data=data)


@router.post(
    "/interpolate",
    summary="A straight path in latent space between two images (their posterior means) or two latents",
    description="Send two images (multipart, or JSON 'images') or JSON 'latents': [[...], [...]]; "
    "steps images come back, both ends included.",
    responses=IMAGE_OUT,
    openapi_extra=image_request_body(InterpolateBody, InterpolateOptions),
    response_class=Response,
)
async def interpolate(job: InterpolateRequest, service: ServiceDep) -> Response:
    images = await service.vae_interpolate(job)
    return await images_response(images, job.options.response_format, "json", service.metrics, job.route)


@router.post(
    "/restyle",
    summary="One digit drawn as other digits in the same handwriting (a conditional VAE)",
    description="Send one image (multipart 'image', raw body, or JSON 'images'); it is encoded given the digit it "
    "shows ('source_label', else the model's best explanation of it) and the posterior mean is decoded once per "
    "label of 'labels' (every digit by default). X-Labels / data[].label say which image is which.",
    responses=IMAGE_OUT,
    openapi_extra=image_request_body(RestyleBody, RestyleOptions),
    response_class=Response,
)
async def restyle(job: RestyleRequest, service: ServiceDep) -> Response:
    images = await service.labelled.restyle(job)
    return await images_response(images, job.options.response_format, job.upload.source, service.metrics, job.route)


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
    grid = await service.vae_manifold(model, size, extent)
    with service.metrics.stage("encode", request.url.path):
        png = await run_cpu_work(lambda: encode_png(tensor_to_image(grid.image)), grid.image[0].numel())
    return Response(png, media_type="image/png", headers={"X-Model": grid.model, "X-Grid": f"{size}x{size}"})
