"""Encoding results: images as PNG bytes or as JSON with base64 PNGs.

The default follows how the images came: one image sent as multipart or raw body comes back as
`image/png` (so `curl -F image=@digit.png .../v1/denoise > out.png` works); several images, or any JSON
request, come back as JSON. `response_format` overrides it; several images asked for as `png` come back
as one grid PNG (row-major, the most nearly square layout) with the grid in the `X-Grid` header.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from fastapi import Response
from pydantic import BaseModel

from app.engine.requests.jobs import ImageResult, Images, Source
from app.engine.scheduling.cpu_work import run_cpu_work
from app.http.schemas import ImageData, ImageList
from app.imaging.codecs import encode_png, grid_columns, tensor_to_pixels, tensors_to_pixels, tile_grid
from app.observability import Metrics


async def images_response(
    images: Images, requested: str | None, source: Source, metrics: Metrics, route: str
) -> Response:
    """The images as PNG or JSON (see choose_format), encoded off the event loop when they are large."""
    response_format = choose_format(requested, source, len(images.results))
    pixels = sum(result.image[0].numel() for result in images.results)
    with metrics.stage("encode", route):
        return await run_cpu_work(
            lambda: image_response(images.model, images.results, response_format, images.seed, images.source_label),
            pixels,
        )


def choose_format(requested: str | None, source: Source | None, count: int) -> str:
    if requested is not None:
        return requested
    return "png" if source in ("multipart", "raw") and count == 1 else "json"


def image_response(
    model: str,
    results: list[ImageResult],
    response_format: str,
    seed: int | None = None,
    source_label: int | None = None,
) -> Response:
    """Encode the results (blocking: PNG encoding; call it from a worker thread for many images)."""
    headers = {"X-Model": model}
    preprocessing = sorted({r.preprocessing for r in results if r.preprocessing is not None})
    if preprocessing:
        headers["X-Preprocessing"] = ",".join(preprocessing)
    if seed is not None:
        headers["X-Seed"] = str(seed)
    sigmas = [r.extra["noise_sigma"] for r in results if "noise_sigma" in r.extra]
    if sigmas:
        headers["X-Noise-Sigma"] = ",".join(f"{sigma:.2f}" for sigma in sigmas)
    labels = [str(r.extra["label"]) for r in results if "label" in r.extra]
    if labels:
        headers["X-Labels"] = ",".join(labels)
    if source_label is not None:
        headers["X-Source-Label"] = str(source_label)
    if response_format == "png":
        if len(results) == 1:
            tile = results[0].image
        else:
            columns = grid_columns(len(results))
            tile = tile_grid([r.image for r in results], columns)
            rows = -(-len(results) // columns)
            headers["X-Grid"] = f"{columns}x{rows}"
        errors = [r.extra["reconstruction_error"] for r in results if "reconstruction_error" in r.extra]
        if errors:
            headers["X-Reconstruction-Error"] = ",".join(f"{error:.6g}" for error in errors)
        return Response(encode_png(tensor_to_pixels(tile)), media_type="image/png", headers=headers)
    pixels = tensors_to_pixels([result.image for result in results])  # one conversion for the batch
    data = [
        image_item(index, image, result.preprocessing, result.extra)
        for index, (image, result) in enumerate(zip(pixels, results, strict=True))
    ]
    body = answer_fields(ImageList, {"model": model, "data": data, "seed": seed, "source_label": source_label})
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


def image_item(index: int, pixels: np.ndarray, preprocessing: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    """One `ImageData` of the answer, built as a dict: validating a pydantic model per image and dumping it
    again cost more than encoding the image. The schema still decides the keys and their order."""
    height, width = pixels.shape[:2]
    png = encode_png(pixels)
    values = {"index": index, "b64_png": base64.b64encode(png).decode("ascii"), "width": width, "height": height}
    return answer_fields(ImageData, {**values, "preprocessing": preprocessing, **extra})


def answer_fields(schema: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """`schema(**values).model_dump(exclude_none=True)` for values the service made itself (of the right
    types): the schema's fields in its order, defaults filled in, None left out."""
    fields = {name: values.get(name, field.default) for name, field in schema.model_fields.items()}
    return {name: value for name, value in fields.items() if value is not None}


# OpenAPI descriptions of the image-returning responses.
IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "PNG bytes (one image, or a grid with X-Grid) or JSON with base64 PNGs, see response_format",
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        "model": ImageList,
    }
}
