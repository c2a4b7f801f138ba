"""Refusals at the front door: under `ae-serve`, a request admission control would refuse is answered by
the HTTP protocol itself as soon as its headers are parsed.

Under a flood most requests are refused, and a refusal that goes the whole way (a request object, an ASGI
task, the request pipeline, the error handler) costs the event loop time the admitted requests need. Here
it costs the header parse (httptools, in C), admission's arithmetic (`AdmissionControl.refusal`), one
small bytes answer written to the socket and one metrics count: no ASGI scope, no task, no FastAPI routing,
and the body is never decoded (it is read past and dropped). The answer is the one the request pipeline
would send: 503 `overloaded` in the service's error shape, `Retry-After`, the request's X-Request-ID, and
`Connection: close` while draining. Everything else (requests admitted, other routes, pipelined requests
waiting behind an answer, `Expect: 100-continue`, percent-encoded paths) takes the normal path, where
admission decides again.

The protocol (app.process.connections.GuardedHttpToolsProtocol) finds this through the app: `app.state.front_door`,
set by `app.main.create_app`.
"""

from __future__ import annotations

import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from app.http.admission import AdmissionControl
from app.http.error_handlers import error_headers, error_json
from app.http.middleware import REQUEST_ID_HEADER, SANE_REQUEST_ID, RefusalSummary, new_request_id
from app.process.drain import Drain

# A refused request's body is read past and dropped on a kept-alive connection up to this size; a larger
# one has its connection closed after the answer instead (it is not worth reading).
SKIP_BODY_MAX_BYTES = 64 * 1024


class FrontDoor:
    def __init__(self, admission: AdmissionControl, refusals: RefusalSummary, drain: Drain) -> None:
        self.admission = admission
        self.refusals = refusals
        self.drain = drain

    def refusal(
        self,
        method: str,
        path: str,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        default_headers: list[tuple[bytes, bytes]],
    ) -> tuple[bytes, bool] | None:
        """(the whole HTTP answer, whether the connection stays open) for a request refused now, else None."""
        started = time.perf_counter()
        error = self.admission.refusal(path, query)
        if error is None:
            return None
        request_id = ""
        for name, value in headers:
            if name == REQUEST_ID_HEADER:
                text = value.decode("latin-1")
                request_id = text if SANE_REQUEST_ID.match(text) else ""
            elif name == b"content-length":
                if not value.isdigit() or int(value) > SKIP_BODY_MAX_BYTES:
                    keep_alive = False
            elif name == b"transfer-encoding":  # a body of unknown length: not worth reading past
                keep_alive = False
        keep_alive = keep_alive and not self.drain.draining
        body = error_json(error, path)  # under /v2 in the Open Inference Protocol's shape
        lines = [STATUS_LINE[error.status_code]]
        lines += [name + b": " + value + b"\r\n" for name, value in default_headers]
        lines += [name + b": " + value + b"\r\n" for name, value in error_headers(error, body)]
        lines.append(REQUEST_ID_HEADER + b": " + (request_id or new_request_id()).encode() + b"\r\n")
        if not keep_alive:
            lines.append(b"connection: close\r\n")
        lines += [b"\r\n", body]
        self.refusals.refused(method, self.admission.route_of(path), time.perf_counter() - started)
        return b"".join(lines), keep_alive


def front_door_of(app: Any) -> FrontDoor | None:
    """The FrontDoor of the service's app, found through the ASGI wrappers uvicorn puts around it."""
    for _ in range(8):
        state = getattr(app, "state", None)
        door = getattr(state, "front_door", None) if state is not None else None
        if isinstance(door, FrontDoor):
            return door
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None
