"""Two small ASGI middlewares: the request context (id, access log, metrics) and the body size cap.

They are plain ASGI rather than `BaseHTTPMiddleware` so the body streams through untouched and the
cap is enforced while the body is read, before a large upload is held in memory.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import CLIENT_CLOSED_REQUEST, PayloadTooLarge
from app.http.error_handlers import error_json
from app.observability import Metrics

access_log = logging.getLogger("app.access")
REQUEST_ID_HEADER = "x-request-id"
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")  # anything else is replaced, never echoed


class RequestContext:
    """Gives every request an id (a sane incoming X-Request-ID, else a new one), echoes it in the
    response, and logs and counts the request when it ends. Routes add `model` and `images` to
    `request.state` for the log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.refusals = RefusalSummary()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, REQUEST_ID_HEADER)
        request_id = incoming if incoming and SANE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500  # what the client gets if the app fails before answering
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER.encode()]
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if state.get("client_disconnected") and status == 500:  # no answer was sent: nobody to send it to
                status = CLIENT_CLOSED_REQUEST
            seconds = time.perf_counter() - started
            self.metrics.observe_request(route_template(scope), scope["method"], status, seconds, state.get("images"))
            if state.get("refused_at_admission"):
                self.refusals.note(scope["method"], scope["path"])
            else:
                self.log(scope, state, status, seconds)

    @staticmethod
    def log(scope: Scope, state: dict[str, Any], status: int, seconds: float) -> None:
        access_log.info(
            "request",
            extra={
                "request_id": state["request_id"],
                "method": scope["method"],
                "route": route_template(scope),
                "path": scope["path"],
                "model": state.get("model"),
                "images": state.get("images"),
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "error_type": state.get("error_type"),
            },
        )


class RefusalSummary:
    """Requests refused by admission control (app.http.admission) are logged as one line per path and
    second, with their count, instead of one line each: under overload that would be thousands of
    identical lines a second, and writing them would cost a third of what a refusal costs. Metrics
    still count every one."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.counts: dict[tuple[str, str], int] = {}  # (method, path) -> refusals not logged yet

    def note(self, method: str, path: str) -> None:
        if not self.counts:  # the first refusal of a period: log the period's count when it ends
            asyncio.get_running_loop().call_later(self.interval_s, self.flush)
        self.counts[method, path] = self.counts.get((method, path), 0) + 1

    def flush(self) -> None:
        for (method, path), count in self.counts.items():
            access_log.warning(
                "requests refused: overloaded",
                extra={"method": method, "path": path, "status": 503, "error_type": "overloaded", "refused": count},
            )
        self.counts.clear()


class BodySizeLimit:
    """Refuses bodies over `max_bytes` with 413: at once from Content-Length, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, "content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            message = f"the body is {declared} bytes; the limit is {self.max_bytes}"
            scope.setdefault("state", {})["error_type"] = PayloadTooLarge.type
            await send(
                {"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": error_json(PayloadTooLarge(message))})
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the route that reads the body, so the app's error handler answers 413.
                    raise PayloadTooLarge(f"the body is over the limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, counting_receive, send)


def route_template(scope: Scope) -> str:
    """The route's template, never the raw path, so metric labels stay bounded; unknown paths share one.
    A request refused by admission control never reached routing; its path is one of the inference routes."""
    route = scope.get("route")
    known = "endpoint" in scope or scope.get("state", {}).get("refused_at_admission")
    return getattr(route, "path", None) or (scope["path"] if known else "unmatched")


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode()
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return str(value.decode("latin-1"))
    return None
