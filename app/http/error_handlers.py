"""The one place where errors become HTTP responses: `{"error": {"type", "message", "param"}}`.

- `ServiceError` subclasses (the route handlers' and the service's) through the handlers installed here;
  what answers before FastAPI is reached (the request pipeline, app.http.middleware, and admission control,
  app.http.admission) sends the same answer with `send_error`, and the HTTP protocol (app.process.connections) writes
  its bytes from `error_json` and `error_headers`.
- `ServiceError` subclasses (app.errors) carry their status, type and headers.
- FastAPI's request validation -> 422 `validation_error` (400 `invalid_request` for a body that is not JSON).
- Starlette's HTTP errors (unknown path 404, wrong method 405, malformed multipart 400) keep their status.
- A client that went away while its body was being read (Starlette's `ClientDisconnect`) -> 499, the
  status the access log and metrics use for disconnects; nobody reads it and it is no error of ours.
- Anything else is a bug: 500 with a generic message, logged with its traceback, never the details, and
  `Connection: close` (uvicorn closes the connection after an error escaped the app).
- Under /v2 (the Open Inference Protocol, app.oip) the same errors keep their status and come in the
  protocol's shape, `{"error": "<message>", "type", "param"}` (`error_envelope`). gRPC: app.oip.grpc_errors.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Send

from app.errors import CLIENT_CLOSED_REQUEST, Overloaded, ServiceError
from app.http.request_record import record_of

logger = logging.getLogger("app.errors")
OIP_PREFIX = "/v2"  # the Open Inference Protocol's REST paths (app.oip.rest)
HTTP_ERROR_TYPES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_envelope(type_: str, message: str, param: str | None, path: str = "") -> dict[str, Any]:
    """The service's error body; on the Open Inference Protocol's paths (/v2, app.oip) the protocol's
    `{"error": "<message>"}`, which its clients read, with the same `type` and `param` beside it."""
    if path == OIP_PREFIX or path.startswith(OIP_PREFIX + "/"):
        return {"error": message, "type": type_, "param": param}
    return {"error": {"type": type_, "message": message, "param": param}}


def error_json(error: ServiceError, path: str = "") -> bytes:
    """The body of an error answered outside FastAPI (the pipeline, admission control, the protocol)."""
    return orjson.dumps(error_envelope(error.type, error.message, error.param, path))


def error_headers(error: ServiceError, body: bytes) -> list[tuple[bytes, bytes]]:
    """The headers of an error answered outside FastAPI: JSON, its length, and the error's own (Retry-After)."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in error.headers.items()]
    return headers


async def send_error(send: Send, error: ServiceError, path: str = "") -> None:
    """Answer `error` from plain ASGI code, before FastAPI is reached: the same answer its handlers give."""
    body = error_json(error, path)  # under /v2 in the Open Inference Protocol's shape
    await send({"type": "http.response.start", "status": error.status_code, "headers": error_headers(error, body)})
    await send({"type": "http.response.body", "body": body})


def error_response(
    request: Request, status: int, type_: str, message: str, param: str | None, headers: dict[str, str] | None = None
) -> JSONResponse:
    record_of(request.scope).error_type = type_  # for the access log line
    return JSONResponse(error_envelope(type_, message, param, request.url.path), status_code=status, headers=headers)


async def handle_service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if exc.status_code >= 500 and not isinstance(exc, Overloaded):  # refusals under load are counted, not logged
        logger.warning("%s: %s", exc.type, exc.message)
    return error_response(request, exc.status_code, exc.type, exc.message, exc.param, exc.headers)


async def handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(error.get("type") == "json_invalid" for error in errors):
        return error_response(request, 400, "invalid_request", "the body is not valid JSON", "body")
    parts = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")]
        parts.append(f"{'.'.join(location) or 'body'}: {error.get('msg', 'invalid')}")
    first = errors[0] if errors else {}
    param = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")) or None
    return error_response(request, 422, "validation_error", "; ".join(parts) or "invalid request", param)


async def handle_client_disconnect(request: Request, exc: Exception) -> Response:
    record = record_of(request.scope)
    record.client_disconnected = True
    record.error_type = "client_closed_request"
    return Response(status_code=CLIENT_CLOSED_REQUEST)  # the server drops it: the connection is gone


async def handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if isinstance(exc.__cause__, ClientDisconnect):  # FastAPI wraps errors of reading a JSON body
        return await handle_client_disconnect(request, exc.__cause__)
    if isinstance(exc.__cause__, ServiceError):  # e.g. the body cap tripped while FastAPI read a JSON body
        return await handle_service_error(request, exc.__cause__)
    type_ = HTTP_ERROR_TYPES.get(exc.status_code, "http_error")
    return error_response(request, exc.status_code, type_, str(exc.detail), None, dict(exc.headers or {}))


async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # Starlette re-raises the error once this answer is sent, and uvicorn then closes the connection:
    # saying so lets a keep-alive client open a new one instead of losing its next request to a reset.
    headers = {"connection": "close"}
    return error_response(request, 500, "internal_error", "internal error; it has been logged", None, headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, handle_service_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(HTTPException, handle_http_error)
    app.add_exception_handler(ClientDisconnect, handle_client_disconnect)
    app.add_exception_handler(Exception, handle_unexpected)
