"""Typed errors built from the service's error body `{"error": {"type", "message", "param"}}`."""

from __future__ import annotations

import httpx


class ApiError(Exception):
    """The server answered with an error; `type`, `message` and `param` are the server's own."""

    def __init__(self, status_code: int, type_: str, message: str, param: str | None = None) -> None:
        super().__init__(f"{status_code} {type_}: {message}" + (f" (param: {param})" if param else ""))
        self.status_code = status_code
        self.type = type_
        self.message = message
        self.param = param


class InvalidRequestError(ApiError):
    """400: the request or one of its images is wrong (invalid_request, invalid_image, task_not_supported)."""


class ValidationError(InvalidRequestError):
    """422: a field failed validation (validation_error)."""


class AuthenticationError(ApiError):
    """401: missing or wrong API key."""


class PermissionDeniedError(ApiError):
    """403: the key may not do this."""


class ModelNotFoundError(ApiError):
    """404 model_not_found: no checkpoint of that name."""


class PayloadTooLargeError(ApiError):
    """413: the body, an image or a count is over the server's limits."""


class UnsupportedMediaTypeError(ApiError):
    """415: the body's content type is not one the route reads."""


class ServiceUnavailableError(ApiError):
    """503 (not_ready, model_unavailable, model_error, ...) or 504 timeout: try again later."""


class OverloadedError(ServiceUnavailableError):
    """503 overloaded: the server's queue is full; `retry_after` is its hint in seconds."""

    def __init__(self, status_code: int, type_: str, message: str, param: str | None, retry_after: float | None):
        super().__init__(status_code, type_, message, param)
        self.retry_after = retry_after


ERRORS_BY_TYPE: dict[str, type[ApiError]] = {
    "invalid_request": InvalidRequestError,
    "invalid_image": InvalidRequestError,
    "task_not_supported": InvalidRequestError,
    "validation_error": ValidationError,
    "unauthorized": AuthenticationError,
    "forbidden": PermissionDeniedError,
    "model_not_found": ModelNotFoundError,
    "payload_too_large": PayloadTooLargeError,
    "unsupported_media_type": UnsupportedMediaTypeError,
}
ERRORS_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: ModelNotFoundError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: ValidationError,
    503: ServiceUnavailableError,
    504: ServiceUnavailableError,
}


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (the service sends a number), or None."""
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def error_from_response(response: httpx.Response) -> ApiError:
    """The typed error for a non-2xx response; bodies that are not the service's shape still give an ApiError."""
    try:
        detail = response.json()["error"]
        type_, message, param = str(detail["type"]), str(detail["message"]), detail.get("param")
    except (ValueError, KeyError, TypeError):
        type_, message, param = "http_error", response.text[:500] or response.reason_phrase, None
    status = response.status_code
    if type_ == "overloaded":
        return OverloadedError(status, type_, message, param, retry_after_seconds(response))
    error_class = ERRORS_BY_TYPE.get(type_) or ERRORS_BY_STATUS.get(status, ApiError)
    return error_class(status, type_, message, param)
