"""Admission control for the inference routes: a request is admitted when it can be served in time.

The batcher's queue is bounded, but a request only reaches it after its body has been read, parsed
and decoded. Under overload that is too late: requests pile up in the server and the event loop
ahead of the batcher, and every one of them ends up waiting seconds. So this plain ASGI middleware
decides before the body is read, per model, from what it measures:
- the **cost per image**: while a model has requests in flight, the busy seconds per image answered
  (a moving average over windows of at least `WINDOW_S`): how fast its queue drains, HTTP, codecs
  and the model step together;
- the **images ahead**: requests in flight times the images a request of this model carries (a moving
  average; the routes tell the middleware a request's image count);
- the **expected wait** of one more request, their product, against the request's **deadline**: the
  batch timeout (`AE_BATCH_TIMEOUT_S`), past which it would get 504 anyway.
A request whose expected wait exceeds the deadline, or that would put more images in flight than the
batcher's queue holds, gets 503 `overloaded` with `Retry-After` the expected wait, rounded up. A
refusal costs the app a few microseconds of arithmetic (they are logged as one summary line a second,
see app.http.middleware.RefusalSummary), far less than serving a request, so the model keeps its share of
the CPU while a flood is refused. Well-behaved clients, however many, whose requests drain within the
deadline are all served. Only the routes that run models are counted; listing models, management and
the probes pass.

A request is counted against the model that serves it, which a client cannot steer. Before the body
is read, that is the model the query string names (`?model=...`) when it is one the registry knows,
else the route's default (a body may name another model, and an unknown name is only a 404 to come).
Once the route has resolved the model (its body read), `count_against` moves the request to that
model's count, and refuses it with the same 503 when that model's queue could not serve it in time
(the deadline and the image bound; the lag-based allowance below applies at the gate, where refusing
is cheap). So a stream of made-up names in the query shares one count per route and cannot add
allowance to a real model, and the bookkeeping stays bounded: there is one load per known model and
per route, whatever the clients write.

The estimate alone cannot stop one kind of overload: when requests arrive faster than the event loop
can even read and refuse them, they wait in the server's socket buffers, where no estimate sees them,
and every answer, 503s included, comes late. So with `max_loop_lag_ms` set, a timer measures every
10 ms how late the event loop runs; while it is later than that, the expected wait a request is
admitted with (the allowance, at first the deadline) shrinks once three checks in a row found it late
(one late check is a burst of answers when a batch completes, not a backlog): by a fifth per check, or
by the ratio of the allowed lag to the lag when that cuts deeper. It grows back by a quarter per check
once the loop keeps time. Admitting shorter queues leaves the loop the time to refuse the rest
promptly. The allowance only refuses a model's requests beyond `min_requests` in flight (two full
batches by default): so many keep the model busy, one batch running while the next gathers, and a
closed group of well-behaved clients no larger than that is never refused because the machine is slow.

It also stops work for clients that have gone away: once the body has been read, it watches for the
client disconnecting and then cancels the request's handler, which takes the request's images that
have not started out of the batcher's queue. The access log and metrics record such a request with
status 499 (the usual "client closed request").
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import Overloaded
from app.http.error_handlers import error_json

LAG_CHECK_S = 0.01  # how often the event loop's lateness is measured
SHRINK, GROW = 0.8, 1.25  # per check: the allowance shrinks by 20% or more while the loop is late, else grows 25%
MIN_ALLOWANCE_S = 0.001  # the allowance shrinks no further (it grows back from here within half a second)
LATE_CHECKS = 3  # checks in a row that must find the loop late before the allowance shrinks
WINDOW_S = 0.05  # busy seconds over which one cost-per-image sample is taken
COST_WEIGHT = 0.3  # weight of a new cost sample in the moving average
IMAGES_WEIGHT = 0.1  # weight of a new request's image count in its moving average


@dataclass
class ModelLoad:
    """What admission knows of one model: requests in flight and how fast they drain."""

    in_flight: int = 0
    images_per_request: float = 1.0  # moving average over answered requests
    seconds_per_image: float = 0.0  # busy seconds per image answered, moving average; 0 until measured
    busy_since: float = 0.0  # start of the current busy stretch (requests in flight) within the window
    window_busy_s: float = 0.0  # busy seconds of the window before busy_since
    window_images: int = 0  # images answered in the window

    @property
    def images_ahead(self) -> float:
        return self.in_flight * self.images_per_request

    @property
    def expected_wait_s(self) -> float:
        """How long one more request would wait for those ahead of it to be answered."""
        return self.images_ahead * self.seconds_per_image

    def admit(self, now: float) -> None:
        if self.in_flight == 0:
            self.busy_since = now
        self.in_flight += 1

    def leave(self, now: float) -> None:
        """A request moved to another model's count before it was answered: no cost sample from it."""
        self.in_flight -= 1
        if self.in_flight == 0:
            self.window_busy_s += now - self.busy_since

    def finish(self, now: float, images: int) -> None:
        self.in_flight -= 1
        self.images_per_request += IMAGES_WEIGHT * (images - self.images_per_request)
        self.window_images += images
        busy = self.window_busy_s + (now - self.busy_since)
        if busy >= WINDOW_S:  # a window's worth of work answered: one cost sample
            sample = busy / self.window_images
            first = self.seconds_per_image == 0.0
            self.seconds_per_image = (
                sample if first else self.seconds_per_image + COST_WEIGHT * (sample - self.seconds_per_image)
            )
            self.window_busy_s, self.window_images, self.busy_since = 0.0, 0, now
        elif self.in_flight == 0:  # idle until the next request: keep the busy time, not the idle time
            self.window_busy_s = busy


class AdmissionControl:
    def __init__(
        self,
        app: ASGIApp,
        deadline_s: float,
        max_images: int,
        paths: Iterable[str],
        max_loop_lag_ms: float = 0.0,
        min_requests: int = 128,
        known_models: Callable[[], Container[str]] | None = None,
    ) -> None:
        self.app = app
        self.deadline_s = deadline_s  # the longest expected wait a request is admitted with
        self.max_images = max_images  # images in flight per model (the batcher's queue bound)
        self.min_requests = min_requests  # requests per model in flight the allowance never refuses
        self.paths = frozenset(paths)  # the routes that run models; any other request passes untouched
        self.max_loop_lag_s = max_loop_lag_ms / 1000  # 0: the allowance never shrinks
        self.allowance_s = deadline_s  # the expected wait admitted now: the deadline, less while the loop is late
        # The names a query may count a request against before its body is read (the registry's models).
        self.known_models = known_models or (lambda: ())
        self.loads: defaultdict[str, ModelLoad] = defaultdict(ModelLoad)
        self._lag_timer: asyncio.TimerHandle | None = None
        self._late_checks = 0  # consecutive checks that found the loop late

    @property
    def in_flight(self) -> dict[str, int]:
        """Requests being served, per model key."""
        return {key: load.in_flight for key, load in self.loads.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if self.max_loop_lag_s and (self._lag_timer is None or self._lag_timer.cancelled()):
            self._schedule_lag_check(asyncio.get_running_loop())
        key = self.key_before_body(scope)
        load = self.loads[key]
        if load.in_flight and self.over(load):
            await self.refuse(scope, send, key, load)
            return
        ticket = Ticket(self, key)
        scope.setdefault("state", {})["admission"] = ticket
        load.admit(time.perf_counter())
        finished = False

        def finish() -> None:
            nonlocal finished
            if not finished:
                finished = True
                images = scope.get("state", {}).get("images")
                count = images if isinstance(images, int) and images > 0 else 1
                self.loads[ticket.key].finish(time.perf_counter(), count)

        async def send_and_count(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finish()  # answered: no longer ahead of anyone, though the handler may still be winding up

        try:
            await run_until_disconnect(self.app, scope, receive, send_and_count)
        finally:
            finish()

    def key_before_body(self, scope: Scope) -> str:
        """The model the query names if the registry knows it, else the route's default."""
        name = query_model(scope)
        if name and name in self.known_models():
            return f"model {name!r}"
        return f"the default model of {scope['path']}"

    def over(self, load: ModelLoad, at_gate: bool = True) -> bool:
        """Whether one more request for this model would be refused (at the gate: also by the allowance)."""
        wait = load.expected_wait_s
        if wait > self.deadline_s or load.images_ahead + load.images_per_request > self.max_images:
            return True
        return at_gate and load.in_flight >= self.min_requests and wait > self.allowance_s

    def move(self, ticket: Ticket, model: str) -> None:
        """Count the ticket's request against `model` from now on; Overloaded if that model cannot serve it
        in time (the deadline and image bound, not the allowance: see the module's docstring)."""
        key = f"model {model!r}"
        if key == ticket.key:
            return
        target = self.loads[key]
        if target.in_flight and self.over(target, at_gate=False):
            raise self.overloaded(key, target)
        now = time.perf_counter()
        self.loads[ticket.key].leave(now)
        target.admit(now)
        ticket.key = key

    # -- the event loop's lateness -------------------------------------------------------------------

    def observe_loop_lag(self, seconds: float) -> None:
        """Shrink the allowance while the loop runs late, and let it grow back to the deadline once it is not."""
        if seconds <= self.max_loop_lag_s:
            self._late_checks = 0
            self.allowance_s = min(self.deadline_s, self.allowance_s * GROW)
            return
        self._late_checks += 1
        if self._late_checks >= LATE_CHECKS:  # late for a while, not one burst of answers: a backlog
            # The later the loop, the deeper the cut, so that a sudden flood is met within a few checks.
            self.allowance_s = max(MIN_ALLOWANCE_S, self.allowance_s * min(SHRINK, self.max_loop_lag_s / seconds))

    def _schedule_lag_check(self, loop: asyncio.AbstractEventLoop) -> None:
        due = loop.time() + LAG_CHECK_S
        self._lag_timer = loop.call_at(due, self._check_lag, loop, due)

    def _check_lag(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        self.observe_loop_lag(loop.time() - due)
        if self.allowance_s < self.deadline_s or any(load.in_flight for load in self.loads.values()):
            self._schedule_lag_check(loop)
        else:  # idle and at the limit: no timer until the next request
            self._lag_timer = None

    def overloaded(self, key: str, load: ModelLoad) -> Overloaded:
        # By the time the requests ahead have been answered, there is room again: that is when to come back.
        wait = load.expected_wait_s
        return Overloaded(
            f"{key} is busy: {load.in_flight} requests ahead, an expected wait of {wait:.2f} s "
            f"(admitted now: {self.allowance_s:.2f} s, at most {self.max_images} images in flight); retry later",
            retry_after=max(1.0, wait + 0.5),  # rounded up, at least a second
        )

    async def refuse(self, scope: Scope, send: Send, key: str, load: ModelLoad) -> None:
        error = self.overloaded(key, load)
        state = scope.setdefault("state", {})
        state["error_type"] = error.type
        state["refused_at_admission"] = True  # logged in a summary line per second (app.http.middleware)
        body = error_json(error)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
        await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class Ticket:
    """One admitted request: the key it is counted under, which `count_against` may move once."""

    def __init__(self, control: AdmissionControl, key: str) -> None:
        self.control = control
        self.key = key

    def move_to(self, model: str) -> None:
        self.control.move(self, model)


def count_against(scope: Scope, model: str) -> None:
    """Count the request against `model`, the one that serves it (known once the route has read the body).

    Raises Overloaded (503) when that model's queue could not serve it in time. Requests that did not pass
    admission control (other routes, tests of a route alone) are not counted."""
    ticket = scope.get("state", {}).get("admission")
    if isinstance(ticket, Ticket):
        ticket.move_to(model)


def query_model(scope: Scope) -> str:
    """The `model` the query string names ('' when none); the last one wins, as in the route's own parsing."""
    query: bytes = scope.get("query_string", b"")
    name = ""
    for pair in query.split(b"&") if b"model=" in query else ():
        if pair.startswith(b"model="):
            name = unquote_plus(pair[len(b"model=") :].decode("latin-1"))
    return name


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
