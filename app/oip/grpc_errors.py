"""The one place where errors become gRPC statuses (the gRPC transport of the Open Inference Protocol, app.oip).

`app.http.error_handlers` answers HTTP with each `ServiceError`'s status; here the same errors get the gRPC code of
that status, their message as the details, and `retry-after` (seconds) in the trailing metadata where the HTTP
answer would carry Retry-After (a 503 under admission control: UNAVAILABLE, retry later). Anything else is a
bug: INTERNAL with a generic message, logged with its traceback.
"""

from __future__ import annotations

import logging

import grpc

from app.errors import CLIENT_CLOSED_REQUEST, Overloaded, ServiceError

logger = logging.getLogger("app.errors")
GRPC_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    CLIENT_CLOSED_REQUEST: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_code(error: ServiceError) -> grpc.StatusCode:
    return GRPC_CODES.get(error.status_code, grpc.StatusCode.INTERNAL)


def grpc_status(error: Exception) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """-> (code, details, trailing metadata) for an error raised while serving an RPC."""
    if not isinstance(error, ServiceError):
        logger.error("unhandled error in a gRPC call", exc_info=error)
        return grpc.StatusCode.INTERNAL, "internal error; it has been logged", ()
    if error.status_code >= 500 and not isinstance(error, Overloaded):  # refusals under load are counted, not logged
        logger.warning("%s: %s", error.type, error.message)
    trailers = [("error-type", error.type)]
    if error.param:
        trailers.append(("error-param", error.param))
    if "Retry-After" in error.headers:
        trailers.append(("retry-after", error.headers["Retry-After"]))
    return grpc_code(error), error.message, tuple(trailers)
