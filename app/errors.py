"""The service's own errors. Routes and the service layer raise these; `app.http.error_handlers` maps them to HTTP.

Each error knows its HTTP status and a stable `type` string that clients can switch on; the
response body is always `{"error": {"type", "message", "param"}}`.
"""

from __future__ import annotations

# The status logged and counted for a request whose client went away before its answer ("client closed
# request"): app.http.admission cancels such a request's work, app.http.error_handlers answers a body cut short with it.
CLIENT_CLOSED_REQUEST = 499


class ServiceError(Exception):
    status_code = 500
    type = "internal_error"

    def __init__(self, message: str, param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}


class InvalidRequest(ServiceError):
    status_code = 400
    type = "invalid_request"


class InvalidImage(InvalidRequest):
    type = "invalid_image"


class ModelNotFound(ServiceError):
    status_code = 404
    type = "model_not_found"


class NotFound(ServiceError):
    """Something a request names that the model does not have (e.g. the latent map of a model without one)."""

    status_code = 404
    type = "not_found"


class TaskNotSupported(InvalidRequest):
    """The model exists but does not do what was asked (e.g. sampling from a plain autoencoder)."""

    type = "task_not_supported"


class PayloadTooLarge(ServiceError):
    status_code = 413
    type = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    type = "unsupported_media_type"


class ValidationFailed(ServiceError):
    status_code = 422
    type = "validation_error"


class Unauthorized(ServiceError):
    status_code = 401
    type = "unauthorized"


class Forbidden(ServiceError):
    status_code = 403
    type = "forbidden"


class ModelUnavailable(ServiceError):
    """The model is known but could not be loaded (broken checkpoint) or is unloaded."""

    status_code = 503
    type = "model_unavailable"


class ModelFailed(ServiceError):
    """The model raised during a forward pass: that batch's requests fail, the service goes on."""

    status_code = 503
    type = "model_error"


class ModelOutOfMemory(ModelFailed):
    """The device ran out of memory for this batch; smaller or later requests may succeed."""

    type = "out_of_memory"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, param, headers={"Retry-After": "1"})


class NotReady(ServiceError):
    status_code = 503
    type = "not_ready"


class Overloaded(ServiceError):
    """The model's queue is full; the client should retry after `retry_after` seconds."""

    status_code = 503
    type = "overloaded"

    def __init__(self, message: str, retry_after: float = 1.0, param: str | None = None) -> None:
        super().__init__(message, param, headers={"Retry-After": str(max(1, round(retry_after)))})


class RequestTimeout(ServiceError):
    """The request waited for the model longer than its deadline."""

    status_code = 504
    type = "timeout"


class BodyTimeout(ServiceError):
    """The request's body did not arrive within its deadline (app.process.connections); the connection is closed."""

    status_code = 408
    type = "request_timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="body", headers={"Connection": "close"})


class HeaderTimeout(ServiceError):
    """The request's headers did not arrive within their deadline, or the connection was evicted at the
    connection cap while still waiting for them (app.process.connections); the connection is closed."""

    status_code = 408
    type = "request_timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="headers", headers={"Connection": "close"})


class TooManyConnections(ServiceError):
    """The server process holds as many connections as it may (AE_MAX_CONNECTIONS); the new one is closed."""

    status_code = 503
    type = "too_many_connections"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1", "Connection": "close"})


class ReplacementRefused(ServiceError):
    """A model's new checkpoint cannot serve in place of the loaded one; the loaded one keeps serving."""

    status_code = 409
    type = "replacement_refused"
