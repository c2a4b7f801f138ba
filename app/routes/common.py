"""What the routes share: the OpenAPI description of the three ways to send images, JSON bodies read after
the key check, and errors."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from app.admission import count_against
from app.dependencies import require_json
from app.errors import InvalidRequest
from app.inputs import validation_failed
from app.schemas import ErrorResponse

BodyT = TypeVar("BodyT", bound=BaseModel)

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


def note_request(request: Request, model: str, images: int) -> None:
    """Count the request against the model that serves it (app.admission: 503 when that model is at its
    limit) and record the model and image count for the access log line."""
    count_against(request.scope, model)
    request.state.model = model
    request.state.images = images


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
