"""Images in, vectors out, shaped like OpenAI's embeddings API, so that its clients work unchanged.

OpenAI's SDK and LangChain's `OpenAIEmbeddings` send `{"model", "input", "encoding_format", ...}` with
the images as base64 strings in `input`; the service's own clients send `images`, multipart or a raw body.
"""

from __future__ import annotations

import base64
from typing import Annotated

import numpy as np
import torch
from fastapi import APIRouter, Depends

from app.engine.requests.jobs import ImageJob
from app.http.dependencies import ServiceDep
from app.http.routes.common import ERROR_RESPONSES, image_job, image_request_body
from app.http.schemas import Embedding, EmbeddingBody, EmbeddingList, EmbeddingOptions, EmbeddingUsage

router = APIRouter(prefix="/v1", tags=["embeddings"])
EmbeddingRequest = Annotated[ImageJob[EmbeddingOptions], Depends(image_job(EmbeddingOptions, openai_input=True))]


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
async def embeddings(job: EmbeddingRequest, service: ServiceDep) -> EmbeddingList:
    embedded = await service.embed(job)
    data = [
        Embedding(index=index, embedding=encode_vector(vector, job.options.encoding_format))
        for index, vector in enumerate(embedded.vectors)
    ]
    usage = EmbeddingUsage(images=len(data), preprocessing=embedded.preprocessing)
    if job.upload.openai_input:
        usage.prompt_tokens = usage.total_tokens = len(data)  # an image counts as one token
    return EmbeddingList(model=embedded.model, data=data, usage=usage)


def encode_vector(vector: torch.Tensor, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.numpy().astype("<f4").tobytes()).decode("ascii")
    return [float(value) for value in np.asarray(vector, dtype=np.float32)]
