"""Images in, vectors out, shaped like OpenAI's embeddings API, so that its clients work unchanged.

OpenAI's SDK and LangChain's `OpenAIEmbeddings` send `{"model", "input", "encoding_format", ...}` with
the images as base64 strings in `input`; the service's own clients send `images`, multipart or a raw body.
"""

from __future__ import annotations

import base64
from typing import Annotated

import numpy as np
import torch
from fastapi import APIRouter, Query, Request

from app.errors import ValidationFailed
from app.inputs import merge_options, read_upload, require_images
from app.registry import ModelEntry
from app.routes.common import ERROR_RESPONSES, image_request_body, note_request
from app.schemas import Embedding, EmbeddingBody, EmbeddingList, EmbeddingOptions, EmbeddingUsage
from app.service import ServiceDep

router = APIRouter(prefix="/v1", tags=["embeddings"])


@router.post(
    "/embeddings",
    summary="Embed images as vectors of the model's embedding size",
    description="encoding_format=base64 sends each vector as base64 of little-endian float32 bytes. "
    "OpenAI's `input` (JSON) takes the place of `images`; its answers also carry OpenAI's usage keys.",
    responses=ERROR_RESPONSES,
    openapi_extra=image_request_body(EmbeddingBody, EmbeddingOptions),
    # OpenAI's usage keys are left out of answers to the service's own requests, which stay as they were.
    response_model_exclude_none=True,
)
async def embeddings(
    request: Request, query: Annotated[EmbeddingOptions, Query()], service: ServiceDep
) -> EmbeddingList:
    upload = await read_upload(request, service.settings, accept_openai_input=True)
    options = merge_options(EmbeddingOptions, query, upload.fields)
    require_images(upload, json_fields="'images' or 'input'")
    entry = service.registry.resolve(options.model, "embed", "embed")
    check_dimensions(entry, options.dimensions, entry.card.latent_size if entry.card else None)
    note_request(request, entry.name, len(upload.blobs))
    vectors, preprocessing = await service.embed(entry, upload, options.preprocess, request.url.path)  # (n, D)
    check_dimensions(entry, options.dimensions, vectors.shape[1])
    if options.normalize:
        vectors = torch.nn.functional.normalize(vectors, dim=1)
    data = [
        Embedding(index=index, embedding=encode_vector(vector, options.encoding_format))
        for index, vector in enumerate(vectors)
    ]
    usage = EmbeddingUsage(images=len(data), preprocessing=preprocessing)
    if upload.openai_input:
        usage.prompt_tokens = usage.total_tokens = len(data)  # an image counts as one token
    return EmbeddingList(model=entry.name, data=data, usage=usage)


def check_dimensions(entry: ModelEntry, dimensions: int | None, size: int | None) -> None:
    """OpenAI's `dimensions` asks for shorter vectors; an autoencoder's code has no order of importance to
    cut by, so only the model's own size is accepted (checked from the card before any work when it says)."""
    if dimensions is not None and size is not None and dimensions != size:
        raise ValidationFailed(
            f"model {entry.name!r} makes vectors of {size} dimensions; 'dimensions' must be {size} or left out "
            "(its vectors are not truncated)",
            param="dimensions",
        )


def encode_vector(vector: torch.Tensor, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.numpy().astype("<f4").tobytes()).decode("ascii")
    return [float(value) for value in np.asarray(vector, dtype=np.float32)]
