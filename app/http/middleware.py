"""The request pipeline: the one ASGI middleware around the app, plain ASGI so the body streams through.

For every HTTP request, in one layer (each used to be a middleware of its own, and each layer cost a
wrapper of `receive` and `send` per request):
- its record (app.http.request_record) and id: a sane incoming X-Request-ID, else a new one, echoed in the answer;
- while the process drains (app.process.drain), every answer says `Connection: close`, so a client never
  sends its next request on a connection that is about to close;
- the body cap (`AE_MAX_BODY_BYTES`): 413 at once from Content-Length, else while the body streams, before
  a large upload is held in memory; and the body deadline (`AE_BODY_TIMEOUT_S`): past it the route reading
  the body gets `BodyTimeout`, answered 408 (app.process.connections explains the deadlines);
- admission control (app.http.admission) for the routes that run models, and for the image routes the
  direct path (app.http.direct), which answers them without FastAPI's routing and dependency solving;
- when it ends: one access log line and the metrics. Requests refused by admission are logged as one
  summary line a second instead (`RefusalSummary`), whether the pipeline or the protocol refused them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import CLIENT_CLOSED_REQUEST, BodyTimeout, PayloadTooLarge
from app.http.admission import AdmissionControl
from app.http.direct import DirectRoutes
from app.http.error_handlers import send_error
from app.http.request_record import RECORD_KEY, RequestRecord
from app.observability import Metrics
from app.process.drain import Drain

access_log = logging.getLogger("app.access")
REQUEST_ID_HEADER = b"x-request-id"
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")  # anything else is replaced, never echoed
# New request ids: a random prefix per process and a counter, unique across workers and restarts as a
# uuid4 would be, without reading the system's random source for every request.
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


class RefusalSummary:
    """Requests refused by admission control are counted in the metrics one by one but logged as one line
    per path and second, with their count: under overload that would be thousands of identical lines a
    second, and writing them would cost a third of what a refusal costs."""

    def __init__(self, metrics: Metrics, interval_s: float = 1.0) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self.counts: dict[tuple[str, str], int] = {}  # (method, path) -> refusals not logged yet

    def refused(self, method: str, path: str, seconds: float) -> None:
        """Count one refusal of a request for `path` (a guarded route: its template is its path)."""
        self.metrics.observe_request(path, method, 503, seconds, None)
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


class RequestPipeline:
    """See the module's docstring. `app.main.create_app` adds it last, so it runs first."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        admission: AdmissionControl,
        refusals: RefusalSummary,
        drain: Drain,
        max_body_bytes: int,
        body_timeout_s: float,
        direct: DirectRoutes | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.admission = admission
        self.refusals = refusals
        self.drain = drain
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.direct = direct

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, REQUEST_ID_HEADER)
        request_id = incoming if incoming and SANE_REQUEST_ID.match(incoming) else new_request_id()
        record = RequestRecord(request_id)
        scope.setdefault("state", {})[RECORD_KEY] = record
        status = 500  # what the client gets if the app fails before answering
        started = time.perf_counter()
        drain = self.drain

        async def send_answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                closing = drain.draining
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if (lowered := name.lower()) != REQUEST_ID_HEADER and not (closing and lowered == b"connection")
                ]
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                if closing:
                    headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            declared = _header(scope, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                error = PayloadTooLarge(f"the body is {declared} bytes; the limit is {self.max_body_bytes}")
                record.error_type = error.type
                await send_error(send_answer, error, scope["path"])
            elif self.admission.guards(scope["path"]):
                route = (self.direct.claim(scope) if self.direct is not None else None) or self.app
                await self.admission.serve(route, scope, self.limited(receive), send_answer, record)
            else:
                await self.app(scope, self.limited(receive), send_answer)
        finally:
            if record.client_disconnected and status == 500:  # no answer was sent: nobody to send it to
                status = CLIENT_CLOSED_REQUEST
            seconds = time.perf_counter() - started
            if record.refused_at_admission:
                self.refusals.refused(scope["method"], self.admission.route_of(scope["path"]), seconds)
            else:
                self.metrics.observe_request(route_template(scope), scope["method"], status, seconds, record.images)
                log(scope, record, status, seconds)

    def limited(self, receive: Receive) -> Receive:
        """`receive` with the body deadline and the body cap: the route reading the body gets `BodyTimeout`
        (408) or `PayloadTooLarge` (413), answered by the app's error handlers, logged and counted."""
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        received = 0
        complete = False

        async def receive_body() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(f"the request's body did not arrive within {self.body_timeout_s:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(f"the body is over the limit of {self.max_body_bytes} bytes")
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        return receive_body


def log(scope: Scope, record: RequestRecord, status: int, seconds: float) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    access_log.info(
        "request",
        extra={
            "request_id": record.request_id,
            "method": scope["method"],
            "route": route_template(scope),
            "path": scope["path"],
            "model": record.model,
            "images": record.images,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "error_type": record.error_type,
        },
    )


def route_template(scope: Scope) -> str:
    """The route's template, never the raw path, so metric labels stay bounded; unknown paths share one."""
    route = scope.get("route")
    return getattr(route, "path", None) or (scope["path"] if "endpoint" in scope else "unmatched")


def _header(scope: Scope, wanted: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == wanted:
            return str(value.decode("latin-1"))
    return None
