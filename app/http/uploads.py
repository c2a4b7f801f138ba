"""Reading images and options from a request, in any of the three accepted shapes.

- `multipart/form-data`: one or more file parts named `image`; other (text) parts are options.
- a raw body with an `image/*` content type: one image; options come as query parameters.
- `application/json`: `{"images": ["<base64>", ...], ...options}`; /v1/embeddings also takes OpenAI's
  `{"input": "<base64>" or ["<base64>", ...], ...}` so that OpenAI clients work unchanged.
Query parameters are options in every shape; a field in the body wins over the same query parameter.
The body size itself is capped while it is read (`app.http.middleware.RequestPipeline`).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from app.engine.requests.jobs import IMAGE_PART, IMAGES_FIELD, OPENAI_INPUT_FIELD, ImageUpload
from app.errors import InvalidImage, InvalidRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from app.http.multipart import split_simple_multipart
from app.imaging.codecs import ALLOWED_CONTENT_TYPES
from app.settings import Settings

OptionsT = TypeVar("OptionsT", bound=BaseModel)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_upload(request: Request, settings: Settings, accept_openai_input: bool = False) -> ImageUpload:
    """The request's images and body options; refuses more images than the limit (413).

    `accept_openai_input`: a JSON body may carry its images as OpenAI's `input` instead of `images`
    (/v1/embeddings); elsewhere `input` is an unknown field, refused with the other options.
    An empty request passes here so its options are validated first; `require_images` refuses it.
    """
    kind = media_type(request)
    if kind == "multipart/form-data":
        upload = await _read_multipart(request, settings)
    elif kind == "application/json":
        upload = _read_json(await request.body(), settings.max_images_per_request, accept_openai_input)
    elif kind in ALLOWED_CONTENT_TYPES:
        upload = ImageUpload([await request.body()], "raw", {})
    elif kind.startswith("image/"):
        raise UnsupportedMediaType(
            f"unsupported image type {kind!r}; send PNG, JPEG, WebP, BMP, TIFF or GIF", param="content-type"
        )
    else:
        raise UnsupportedMediaType(
            f"unsupported content type {kind or 'none'!r}; send multipart/form-data with 'image' parts, "
            "a raw image/* body, or application/json with base64 'images'",
            param="content-type",
        )
    count = len(upload.blobs)
    if count > settings.max_images_per_request:
        raise PayloadTooLarge(
            f"{count} images in one request; the limit is {settings.max_images_per_request}", param=IMAGE_PART
        )
    return upload


def require_images(upload: ImageUpload, json_fields: str = "'images'") -> None:
    if not upload.blobs:
        where = json_fields if upload.source == "json" else "parts named 'image'"
        raise InvalidRequest(f"the request has no images; send them as {where}", param=IMAGE_PART)


async def _read_multipart(request: Request, settings: Settings) -> ImageUpload:
    # One file more than allowed lets us answer "too many images" ourselves, with a 413.
    max_files = settings.max_images_per_request + 1
    plain = split_simple_multipart(
        request.headers.get("content-type", ""), await request.body(), max_files=max_files, max_fields=64
    )
    if plain is None:  # anything unusual: Starlette's parser (it reads the body kept by request.body())
        return await _read_multipart_in_full(request, settings)
    blobs: list[bytes] = []
    fields: dict[str, Any] = {}
    for part in plain:
        _check_part(part.name, part.is_file)
        if isinstance(part.value, bytes):
            blobs.append(part.value)
        else:
            fields[part.name] = part.value
    return ImageUpload(blobs, "multipart", fields)


async def _read_multipart_in_full(request: Request, settings: Settings) -> ImageUpload:
    try:
        # One file more than allowed lets us answer "too many images" ourselves, with a 413.
        form = await request.form(max_files=settings.max_images_per_request + 1, max_fields=64)
    except HTTPException as exc:
        if "Too many files" in str(exc.detail):
            raise PayloadTooLarge(
                f"more than {settings.max_images_per_request} images in one request", param=IMAGE_PART
            ) from None
        raise InvalidRequest(f"malformed multipart body: {exc.detail}") from None
    blobs: list[bytes] = []
    fields: dict[str, Any] = {}
    for name, value in form.multi_items():
        _check_part(name, isinstance(value, UploadFile))
        if isinstance(value, UploadFile):
            blobs.append(await value.read())
        else:
            fields[name] = value
    await form.close()
    return ImageUpload(blobs, "multipart", fields)


def _check_part(name: str, is_file: bool) -> None:
    """Files are images named 'image'; 'image' is always a file."""
    if is_file and name != IMAGE_PART:
        raise InvalidRequest(f"unexpected file part {name!r}; send images as parts named 'image'", param=name)
    if not is_file and name == IMAGE_PART:
        raise InvalidRequest("the 'image' part must be a file (curl -F image=@digit.png)", param=name)


def _read_json(body: bytes, max_images: int, accept_openai_input: bool) -> ImageUpload:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationFailed("the JSON body must be an object", param="body")
    images = data.pop(IMAGES_FIELD, None)
    if accept_openai_input:
        openai_input = data.pop(OPENAI_INPUT_FIELD, None)  # "input": null is no input, as "images": null is
        if openai_input is not None:
            if images is not None:
                raise ValidationFailed(
                    "send the images as 'images' or as 'input' (OpenAI's name for them), not both",
                    param=OPENAI_INPUT_FIELD,
                )
            return _read_openai_input(openai_input, data, max_images)
    if images is None:
        images = []
    if not isinstance(images, list) or not all(isinstance(item, str) for item in images):
        raise ValidationFailed("'images' must be a list of base64 strings", param="images")
    if len(images) > max_images:  # before decoding any of them
        raise PayloadTooLarge(f"{len(images)} images in one request; the limit is {max_images}", param="images")
    return ImageUpload([decode_base64(item, f"images[{index}]") for index, item in enumerate(images)], "json", data)


def _read_openai_input(value: object, fields: dict[str, Any], max_images: int) -> ImageUpload:
    """OpenAI's `input`: one base64 image (or data: URL) or a list of them, read like `images`."""
    if isinstance(value, str):
        texts, bare_string = [value], True
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        texts, bare_string = value, False
    else:  # OpenAI's token arrays (lists of integers) say nothing about an image
        raise ValidationFailed(
            "'input' must be a base64-encoded image (or a data: URL) or a list of them", param=OPENAI_INPUT_FIELD
        )
    if len(texts) > max_images:  # before decoding any of them
        raise PayloadTooLarge(
            f"{len(texts)} images in one request; the limit is {max_images}", param=OPENAI_INPUT_FIELD
        )
    upload = ImageUpload([], "json", fields, json_field=OPENAI_INPUT_FIELD, bare_string=bare_string)
    upload.blobs = [decode_base64(text, upload.param(index)) for index, text in enumerate(texts)]
    return upload


def decode_base64(text: str, param: str) -> bytes:
    """Standard or URL-safe base64, optionally as a data: URL."""
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    text = "".join(text.split())  # line breaks are common in base64 from command-line tools
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage("not valid base64", param=param) from None


def merge_options(options_type: type[OptionsT], query: BaseModel, fields: dict[str, Any]) -> OptionsT:
    """Options from query parameters, overridden by the same fields in the body; 422 when invalid."""
    values = query.model_dump(exclude_unset=True)
    values.update(fields)
    try:
        return options_type.model_validate(values)
    except ValidationError as exc:
        raise validation_failed(exc) from None


def validation_failed(exc: ValidationError) -> ValidationFailed:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0] if errors else {"loc": (), "msg": "invalid"}
    param = ".".join(str(part) for part in first["loc"]) or None
    message = "; ".join(f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}" for error in errors)
    return ValidationFailed(message, param=param)
