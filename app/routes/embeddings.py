"""Images in, vectors out, shaped like the widely used embeddings APIs."""

from __future__ import annotations

import base64
from typing import Annotated

import numpy as np
import torch
from fastapi import APIRouter, Query, Request

from app.inputs import merge_options, read_upload, require_images
from app.routes.common import ERROR_RESPONSES, image_request_body, note_request
from app.schemas import Embedding, EmbeddingBody, EmbeddingList, EmbeddingOptions, EmbeddingUsage
from app.service import ServiceDep

router = APIRouter(prefix="/v1", tags=["embeddings"])


@router.post(
    "/embeddings",
    summary="Embed images as vectors of the model's embedding size",
    description="encoding_format=base64 sends each vector as base64 of little-endian float32 bytes.",
    responses=ERROR_RESPONSES,
    openapi_extra=image_request_body(EmbeddingBody, EmbeddingOptions),
)
async def embeddings(
    request: Request, query: Annotated[EmbeddingOptions, Query()], service: ServiceDep
) -> EmbeddingList:
    upload = await read_upload(request, service.settings)
    options = merge_options(EmbeddingOptions, query, upload.fields)
    require_images(upload)
    entry = service.registry.resolve(options.model, "embed", "embed")
    note_request(request, entry.name, len(upload.blobs))
    vectors, preprocessing = await service.embed(entry, upload, options.preprocess, request.url.path)  # (n, D)
    if options.normalize:
        vectors = torch.nn.functional.normalize(vectors, dim=1)
    data = [
        Embedding(index=index, embedding=encode_vector(vector, options.encoding_format))
        for index, vector in enumerate(vectors)
    ]
    usage = EmbeddingUsage(images=len(data), preprocessing=preprocessing)
    return EmbeddingList(model=entry.name, data=data, usage=usage)


def encode_vector(vector: torch.Tensor, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.numpy().astype("<f4").tobytes()).decode("ascii")
    return [float(value) for value in np.asarray(vector, dtype=np.float32)]
