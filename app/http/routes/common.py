"""What the routes share: the opening steps of an image route (`image_job`), the OpenAPI description of the
three ways to send images, JSON bodies read after the key check, and errors.

No `from __future__ import annotations` here: `image_job` builds its dependency's signature from the options
type it is given, and FastAPI reads that signature at run time.
"""

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Query, Request
from pydantic import BaseModel, ValidationError

from app.engine.requests.jobs import ImageJob
from app.errors import InvalidRequest
from app.http.dependencies import app_settings, require_json
from app.http.schemas import ErrorResponse
from app.http.uploads import merge_options, read_upload, require_images, validation_failed

BodyT = TypeVar("BodyT", bound=BaseModel)
OptionsT = TypeVar("OptionsT", bound=BaseModel)

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "bad image or request (e.g. wrong size with preprocess=none)"},
    404: {"model": ErrorResponse, "description": "unknown model"},
    413: {
        "model": ErrorResponse,
        "description": "body, pixel count (of an upscaled answer too) or image count over the limit",
    },
    415: {"model": ErrorResponse, "description": "unsupported content type or image type"},
    422: {"model": ErrorResponse, "description": "invalid fields"},
    503: {
        "model": ErrorResponse,
        "description": "model unavailable, not ready, overloaded or out of memory (Retry-After), "
        "or the model failed on this batch (model_error)",
    },
}


def image_request_body(json_body: type[BaseModel], options: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads images itself (multipart, raw image/*, or JSON base64)."""
    form_fields = {
        name: {"type": "string", "description": field.description or ""}
        for name, field in options.model_fields.items()
        if name != "latents"
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "image": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                                "description": "one or more image files, each a part named 'image'",
                            },
                            **form_fields,
                        },
                        "required": ["image"],
                    }
                },
                "image/*": {"schema": {"type": "string", "format": "binary", "description": "one image file"}},
                "application/json": {"schema": json_body.model_json_schema()},
            },
        }
    }


def image_job(
    options_type: type[OptionsT], *, images_required: bool = True, openai_input: bool = False
) -> Callable[..., Awaitable[ImageJob[OptionsT]]]:
    """The dependency that opens every image route: read the upload (any of the three shapes), merge the
    query options with those in the body into `options_type`, and refuse a request without images (unless
    the route takes other inputs instead). `openai_input`: a JSON body may carry its images as OpenAI's
    `input` instead of `images` (/v1/embeddings). The model is chosen later, by the service."""
    json_fields = "'images' or 'input'" if openai_input else "'images'"

    async def open_image_request(request: Request, query: Annotated[options_type, Query()]) -> ImageJob[OptionsT]:  # type: ignore[valid-type]
        upload = await read_upload(request, app_settings(request), accept_openai_input=openai_input)
        options = merge_options(options_type, query, upload.fields)
        if images_required:
            require_images(upload, json_fields)
        return ImageJob(upload, options, request.url.path)

    return open_image_request


def json_body(model: type[BodyT]) -> Callable[[Request], Awaitable[BodyT]]:
    """A dependency reading the JSON body into `model`, solved after the router's dependencies (the API key).

    FastAPI parses a body parameter before it solves any dependency, so without this a client with no
    key would have its JSON parsed and be told it is malformed, instead of a 401 before any work.
    """

    async def read(request: Request) -> BodyT:
        await require_json(request)  # 415 for a form or a missing content type
        try:
            data = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequest("the body is not valid JSON", param="body") from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise validation_failed(exc) from None

    return read


def json_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting the JSON body that `json_body(model)` reads."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}
