"""What the image routes share: the OpenAPI description of the three ways to send images, and errors."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel

from app.schemas import ErrorResponse

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "bad image or request (e.g. wrong size with preprocess=none)"},
    404: {"model": ErrorResponse, "description": "unknown model"},
    413: {"model": ErrorResponse, "description": "body, pixel count or image count over the limit"},
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
    """Record the model and image count for the access log line."""
    request.state.model = model
    request.state.images = images
