"""Admission control for the inference routes: a bounded number of requests per model at a time.

The batcher's queue is bounded, but a request only reaches it after its body has been read, parsed
and decoded. Under overload that is too late: requests pile up in the server and the event loop
ahead of the batcher, and every one of them ends up waiting seconds. So this plain ASGI middleware
counts the requests being served per model and refuses one more than `limit` at once, before its
body is read, with 503 `overloaded` and a `Retry-After` header. A refusal costs the app about
15 microseconds (they are logged as one summary line a second, see app.middleware.RefusalSummary),
far less than serving a request, so the model keeps its share of the CPU while a flood is refused.
Only the routes that run models are counted; listing models, management and the probes pass.

The model is the one named in the query string (`?model=...`); requests that name it in the body,
or name none, are counted under their route's default. This is only the key of a counter: the route
still resolves and validates the model as usual.

The limit alone cannot stop one kind of overload: when requests arrive faster than the event loop
can even read and refuse them, they wait in the server's socket buffers, where no limit sees them,
and every answer, 503s included, comes late. So with `max_loop_lag_ms` set, a timer measures every
10 ms how late the event loop runs; while it is later than that, the number of requests admitted per
model (the allowance) shrinks once three checks in a row found it late (one late check is a burst of
answers when a batch completes, not a backlog): by a fifth per check, or by the ratio of the allowed
lag to the lag when that cuts deeper. It grows back by one per check once the loop keeps time.
Serving fewer requests leaves the loop the time to refuse the rest promptly.

It also stops work for clients that have gone away: once the body has been read, it watches for the
client disconnecting and then cancels the request's handler, which takes the request's images that
have not started out of the batcher's queue. The access log and metrics record such a request with
status 499 (the usual "client closed request").
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import Overloaded
from app.errors_http import error_json

LAG_CHECK_S = 0.01  # how often the event loop's lateness is measured
SHRINK, GROW = 0.8, 1  # per check: the allowance shrinks by 20% or more while the loop is late, else grows by 1
LATE_CHECKS = 3  # checks in a row that must find the loop late before the allowance shrinks


class AdmissionControl:
    def __init__(self, app: ASGIApp, limit: int, paths: Iterable[str], max_loop_lag_ms: float = 0.0) -> None:
        self.app = app
        self.limit = limit
        self.paths = frozenset(paths)  # the routes that run models; any other request passes untouched
        self.max_loop_lag_s = max_loop_lag_ms / 1000  # 0: the allowance never shrinks
        self.allowance = float(limit)  # requests per model admitted now: the limit, less while the loop is late
        self.in_flight: defaultdict[str, int] = defaultdict(int)  # requests being served, per model key
        self.seconds_per_request: defaultdict[str, float] = defaultdict(float)  # moving average, for Retry-After
        self._lag_timer: asyncio.TimerHandle | None = None
        self._late_checks = 0  # consecutive checks that found the loop late

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if self.max_loop_lag_s and (self._lag_timer is None or self._lag_timer.cancelled()):
            self._schedule_lag_check(asyncio.get_running_loop())
        key = model_key(scope)
        if self.in_flight[key] >= self.allowance:
            await self.refuse(scope, send, key)
            return
        self.in_flight[key] += 1
        started = time.perf_counter()
        try:
            await run_until_disconnect(self.app, scope, receive, send)
        finally:
            self.in_flight[key] -= 1
            seconds = time.perf_counter() - started
            self.seconds_per_request[key] = 0.9 * self.seconds_per_request[key] + 0.1 * seconds

    # -- the event loop's lateness -------------------------------------------------------------------

    def observe_loop_lag(self, seconds: float) -> None:
        """Shrink the allowance while the loop runs late, and let it grow back to the limit once it is not."""
        if seconds <= self.max_loop_lag_s:
            self._late_checks = 0
            self.allowance = min(float(self.limit), self.allowance + GROW)
            return
        self._late_checks += 1
        if self._late_checks >= LATE_CHECKS:  # late for a while, not one burst of answers: a backlog
            # The later the loop, the deeper the cut, so that a sudden flood is met within a few checks.
            self.allowance = max(1.0, self.allowance * min(SHRINK, self.max_loop_lag_s / seconds))

    def _schedule_lag_check(self, loop: asyncio.AbstractEventLoop) -> None:
        due = loop.time() + LAG_CHECK_S
        self._lag_timer = loop.call_at(due, self._check_lag, loop, due)

    def _check_lag(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        self.observe_loop_lag(loop.time() - due)
        if self.allowance < self.limit or any(self.in_flight.values()):
            self._schedule_lag_check(loop)
        else:  # idle and at the limit: no timer until the next request
            self._lag_timer = None

    async def refuse(self, scope: Scope, send: Send, key: str) -> None:
        # A new request would wait about as long as the ones being served take: that is when to come back.
        error = Overloaded(
            f"too many requests for {key}: {self.in_flight[key]} are being served; retry later",
            retry_after=math.ceil(self.seconds_per_request[key]),
        )
        state = scope.setdefault("state", {})
        state["error_type"] = error.type
        state["refused_at_admission"] = True  # logged in a summary line per second (app.middleware)
        body = error_json(error)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
        await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def model_key(scope: Scope) -> str:
    """'model <name>' when the query string names one, else 'the default model of <path>'."""
    query: bytes = scope.get("query_string", b"")
    name = ""
    for pair in query.split(b"&") if b"model=" in query else ():
        if pair.startswith(b"model="):  # the last one wins, as in the route's own parsing
            name = unquote_plus(pair[len(b"model=") :].decode("latin-1"))
    return f"model {name[:128]!r}" if name else f"the default model of {scope['path']}"


async def run_until_disconnect(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run the app for one request; cancel it if the client disconnects before its answer is sent."""
    body_read = asyncio.Event()
    answered = False

    async def receive_body() -> Message:
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            body_read.set()
        return message

    async def send_tracked(message: Message) -> None:
        nonlocal answered
        await send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            answered = True  # from now on the server reports a disconnect for every request

    handler = asyncio.ensure_future(app(scope, receive_body, send_tracked))
    watcher = asyncio.ensure_future(watch_for_disconnect(receive, body_read))
    try:
        await asyncio.wait((handler, watcher), return_when=asyncio.FIRST_COMPLETED)
        disconnected = watcher.done() and not watcher.cancelled() and watcher.exception() is None
        gone = disconnected and not handler.done() and not answered
        if gone:  # the client went away while its request was being served: drop the work
            scope.setdefault("state", {})["client_disconnected"] = True
            handler.cancel()
        try:
            await handler
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not gone or (current is not None and current.cancelling()):
                raise  # not our cancellation: this middleware itself is being cancelled
    finally:
        watcher.cancel()
        if not handler.done():
            handler.cancel()


async def watch_for_disconnect(receive: Receive, body_read: asyncio.Event) -> None:
    """Return when the client disconnects (only listened for once the app has read the whole body)."""
    await body_read.wait()
    while (await receive())["type"] != "http.disconnect":
        pass
