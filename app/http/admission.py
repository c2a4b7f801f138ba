"""Admission control for the inference routes: a request is admitted when it can be served within a budget.

The batcher's queue is bounded, but a request only reaches it after its body has been read, parsed
and decoded. Under overload that is too late: requests pile up in the server and the event loop
ahead of the batcher, and every one of them ends up waiting seconds. So admission decides before the
body is read, per model, from what it measures:
- the **cost per image**: while a model has requests in flight, the busy seconds per image answered
  (a moving average over windows of at least `WINDOW_S`, so it follows a change of load within tens of
  milliseconds): how fast its queue drains, HTTP, codecs and the model step together;
- the **images ahead**: requests in flight times the images a request of this model carries (a moving
  average; the service tells the request's record the image count);
- the **event loop's lag**: how late a 10 ms timer fires (`LAG_CHECK_S`). Requests the server has not
  even read yet wait in its socket buffers, where no count sees them; the lag is how long they wait, so
  it counts as queue. It rises at once and decays by half per check once the loop keeps time.
The **expected wait** of one more request is the cost per image times the images ahead, plus the lag.
A request is refused with 503 `overloaded`, and `Retry-After` the expected wait (the time the queue
takes to drain) rounded up to whole seconds, when
- its expected wait is over the **budget** (`AE_QUEUE_BUDGET_MS`) and the model already has
  `min_requests` in flight (two full batches by default: so many keep the model busy, one batch running
  while the next gathers, and a closed group of well-behaved clients no larger than that is never
  refused because the machine is slow); or
- the service is **under pressure** (it refused a request within the last `PRESSURE_S`: a flood, since a
  group of polite clients within `min_requests` is never refused) and its expected wait is over the
  budget however few are in flight, or the loop's lag alone is over a quarter of the budget (then the
  loop is the queue: requests arrive faster than it can even read them, and each one served takes time
  from reading and refusing the others; a burst of answers when a batch completes stays under it); or
- the model's cost is not measured yet (no window of work answered since start-up) and `min_requests`
  are in flight: a flood at start-up is not admitted on an estimate of zero; or
- its expected wait is over its **deadline** (`AE_BATCH_TIMEOUT_S`, past which it would get 504), or it
  would put more images in flight than the batcher's queue holds (`AE_BATCH_MAX_QUEUE_IMAGES`).
Admitted requests therefore wait about the budget at most, and the rest learn at once that they should
back off. A refusal costs far less than serving a request: under `ae-serve` the HTTP protocol asks
`refusal` as soon as a request's headers are parsed and writes the 503 itself, before any ASGI or
FastAPI work (app.process.connections); elsewhere the request pipeline refuses before the body is read
(app.http.middleware). Refusals are logged as one summary line a second (app.http.middleware.RefusalSummary).
Only the routes that run models are counted; listing models, management and the probes pass.

A request is counted against the model that serves it, which a client cannot steer. Before the body
is read, that is the model the query string names (`?model=...`) when it is one the registry knows; with
no name, the route's default model (`route_default`: the one AE_DEFAULT_MODELS configures for the route's
task), so that the budget sees the queue the request joins; else (an unknown name, or a route without a
default) the route's own count (a body may name another model, and an unknown name is only a 404 to come).
Once the service has chosen the model (its body read), the request's record (app.http.request_record) moves
it to that model's count, refused with the same 503 when that model's queue could not serve it in time
(the deadline and the image bound; the budget applies at the gate, where refusing is cheap). So a stream
of made-up names in the query shares one count per route and cannot add allowance to a real model, and
the bookkeeping stays bounded: there is one load per known model and per route, whatever clients write.

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
from app.http.error_handlers import send_error
from app.http.request_record import RequestRecord

LAG_CHECK_S = 0.01  # how often the event loop's lateness is measured
LAG_DECAY = 0.5  # per check on time, the lag counted as queue halves (it rises at once)
# Under pressure, a loop later than this share of the budget refuses: it is saturated, and the requests it
# has not read yet wait at least that long; a burst of answers when a batch completes stays under it.
LAG_SHARE_OF_BUDGET = 0.25
PRESSURE_S = 1.0  # after a refusal, this long under pressure (see AdmissionControl.over)
LAG_FLOOR_S = 0.0005  # below this the loop keeps time: the lag counts as none and the timer stops when idle
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
    def drain_s(self) -> float:
        """How long the requests in flight take to be answered: what one more would wait for."""
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
    """The counts and the decision (see the module's docstring); the request pipeline runs `serve`, the
    HTTP protocol asks `refusal` before it builds a request at all."""

    def __init__(
        self,
        budget_s: float,
        deadline_s: float,
        max_images: int,
        paths: Iterable[str],
        min_requests: int = 128,
        known_models: Callable[[], Container[str]] | None = None,
        path_model: Callable[[str], PathModel | None] | None = None,
        route_default: Callable[[str], str | None] | None = None,
    ) -> None:
        self.budget_s = budget_s  # the longest expected wait a request is admitted with (beyond min_requests)
        self.deadline_s = deadline_s  # past this a request would time out: never admitted
        self.max_images = max_images  # images in flight per model (the batcher's queue bound)
        self.min_requests = min_requests  # requests per model in flight the budget never refuses
        self.paths = frozenset(paths)  # the routes that run models; any other request passes untouched
        # The names a query may count a request against before its body is read (the registry's models).
        self.known_models = known_models or (lambda: ())
        self.loads: defaultdict[str, ModelLoad] = defaultdict(ModelLoad)
        # Routes outside `paths` that name their model in the path (the Open Inference Protocol's
        # /v2/models/{name}/infer, app.oip): the model and the route's template, else None (not a model route).
        self.path_model = path_model or (lambda path: None)
        # The model a route runs when a request names none (its default in AE_DEFAULT_MODELS), else None.
        self.route_default = route_default or (lambda path: None)
        self.loop_lag_s = 0.0  # how late the event loop runs: the wait of requests not read yet
        self.pressure_until = 0.0  # until when the last refusal puts every request under the budget
        self._lag_timer: asyncio.TimerHandle | None = None

    @property
    def in_flight(self) -> dict[str, int]:
        """Requests being served, per model key."""
        return {key: load.in_flight for key, load in self.loads.items()}

    def guards(self, path: str) -> bool:
        return path in self.paths or self.path_model(path) is not None

    def route_of(self, path: str) -> str:
        """A guarded path's route template, bounded for metric labels (a protocol path names its model)."""
        named = None if path in self.paths else self.path_model(path)
        return path if named is None else named.route

    # -- the decision --------------------------------------------------------------------------------

    def key_for(self, path: str, query: bytes) -> str:
        """The model the query (or the protocol's path) names if the registry knows it, else the route's default."""
        named = None if path in self.paths else self.path_model(path)
        if named is not None:
            return self.key_of(named.model, named.route)
        return self.key_of(query_model(query) or self.route_default(path), path)

    def key_of(self, name: str | None, route: str) -> str:
        """The count of model `name` if the registry knows it, else the one of `route` (its default model, or
        the names no model has: a made-up name adds no allowance to a real model)."""
        if name and name in self.known_models():
            return f"model {name!r}"
        return f"the default model of {route}"

    def admit(self, key: str) -> Ticket:
        """Admit one request counted under `key`, or raise Overloaded; the caller finishes the ticket when it
        has answered. HTTP requests pass here through `serve`; the gRPC server calls it itself (app.oip)."""
        self.watch_loop()
        load = self.loads[key]
        if self.over(load):
            raise self.overloaded(key, load)
        load.admit(time.perf_counter())
        return Ticket(self, key)

    def expected_wait_s(self, load: ModelLoad) -> float:
        return load.drain_s + self.loop_lag_s

    def over(self, load: ModelLoad, at_gate: bool = True) -> bool:
        """Whether one more request for this model would be refused (at the gate: also by the budget)."""
        if not load.in_flight:
            return False
        if load.drain_s > self.deadline_s or load.images_ahead + load.images_per_request > self.max_images:
            return True
        if not at_gate:
            return False
        if load.seconds_per_image == 0.0:  # no cost measured yet: two full batches, no more
            return load.in_flight >= self.min_requests
        wait = self.expected_wait_s(load)
        if time.perf_counter() < self.pressure_until:
            # Refusing already: a flood, not a group of polite clients. Every request is held to the budget,
            # and a loop later than a quarter of it refuses too: it is the queue then, and every request
            # served takes time from reading and refusing the others.
            return wait > self.budget_s or self.loop_lag_s > self.budget_s * LAG_SHARE_OF_BUDGET
        return load.in_flight >= self.min_requests and wait > self.budget_s

    def refusal(self, path: str, query: bytes) -> Overloaded | None:
        """The 503 a request for `path?query` gets now, or None when it would be admitted (or is not guarded).
        Creates no bookkeeping: what a flood of refused requests costs is this arithmetic."""
        if not self.guards(path):
            return None
        self.watch_loop()
        key = self.key_for(path, query)
        load = self.loads.get(key)
        if load is None or not self.over(load):
            return None
        return self.overloaded(key, load)

    def overloaded(self, key: str, load: ModelLoad) -> Overloaded:
        self.pressure_until = time.perf_counter() + PRESSURE_S
        # By the time the requests ahead have been answered, there is room again: that is when to come back.
        wait = self.expected_wait_s(load)
        return Overloaded(
            f"{key} is busy: {load.in_flight} requests ahead, an expected wait of {wait:.2f} s "
            f"(budget {self.budget_s:.2f} s, at most {self.max_images} images in flight); retry later",
            retry_after=max(1.0, wait + 0.5),  # rounded up, at least a second
        )

    # -- serving -------------------------------------------------------------------------------------

    async def serve(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, record: RequestRecord) -> None:
        """Run the app for a guarded request if it is admitted, else answer 503 without reading its body."""
        self.watch_loop()
        key = self.key_for(scope["path"], scope.get("query_string", b""))
        load = self.loads[key]
        if self.over(load):
            error = self.overloaded(key, load)
            record.refused_at_admission = True  # logged in a summary line per second (app.http.middleware)
            record.error_type = error.type
            await send_error(send, error, scope["path"])
            return
        ticket = record.ticket = Ticket(self, key)
        load.admit(time.perf_counter())
        finished = False

        def finish() -> None:
            nonlocal finished
            if not finished:
                finished = True
                images = record.images
                self.loads[ticket.key].finish(time.perf_counter(), images if images and images > 0 else 1)

        async def send_and_count(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finish()  # answered: no longer ahead of anyone, though the handler may still be winding up

        try:
            await run_until_disconnect(app, scope, receive, send_and_count, record)
        finally:
            finish()

    def move(self, ticket: Ticket, model: str) -> None:
        """Count the ticket's request against `model` from now on; Overloaded if that model cannot serve it
        in time (the deadline and image bound, not the budget: see the module's docstring)."""
        key = f"model {model!r}"
        if key == ticket.key:
            return
        target = self.loads[key]
        if self.over(target, at_gate=False):
            raise self.overloaded(key, target)
        now = time.perf_counter()
        self.loads[ticket.key].leave(now)
        target.admit(now)
        ticket.key = key

    # -- the event loop's lateness -------------------------------------------------------------------

    def observe_loop_lag(self, seconds: float) -> None:
        """Count a measured lateness as queue: at once when it grows, halving per check when it shrinks."""
        if seconds >= self.loop_lag_s:
            self.loop_lag_s = seconds
        else:
            lag = LAG_DECAY * self.loop_lag_s + (1 - LAG_DECAY) * seconds
            self.loop_lag_s = 0.0 if lag < LAG_FLOOR_S else lag

    def watch_loop(self) -> None:
        """Measure the loop's lateness while requests are guarded (the timer stops when all is quiet)."""
        if self._lag_timer is None:
            self._schedule_lag_check(asyncio.get_running_loop())

    def _schedule_lag_check(self, loop: asyncio.AbstractEventLoop) -> None:
        # The clock is read here rather than with loop.time(): uvloop's is the time the current iteration
        # began, which would hide how long the iteration itself has run.
        self._lag_timer = loop.call_later(LAG_CHECK_S, self._check_lag, loop, time.perf_counter() + LAG_CHECK_S)

    def _check_lag(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        self.observe_loop_lag(max(0.0, time.perf_counter() - due))
        if self.loop_lag_s or any(load.in_flight for load in self.loads.values()):
            self._schedule_lag_check(loop)
        else:  # idle and on time: no timer until the next request
            self._lag_timer = None


class Ticket:
    """One admitted request: the key it is counted under, which the service's accounting may move once."""

    def __init__(self, control: AdmissionControl, key: str) -> None:
        self.control = control
        self.key = key

    def move_to(self, model: str) -> None:
        self.control.move(self, model)

    def finish(self, images: int) -> None:
        """The request was answered (or failed) with `images` images (0: not known, counted as one)."""
        self.control.loads[self.key].finish(time.perf_counter(), images if images > 0 else 1)


@dataclass(frozen=True)
class PathModel:
    """A model route that names its model in the path: the name (a model of the registry or not) and the
    route's template (bounded, for keys and metric labels)."""

    model: str
    route: str


def query_model(query: bytes) -> str:
    """The `model` a query string names ('' when none); the last one wins, as in the route's own parsing."""
    name = ""
    for pair in query.split(b"&") if b"model=" in query else ():
        if pair.startswith(b"model="):
            name = unquote_plus(pair[len(b"model=") :].decode("latin-1"))
    return name


async def run_until_disconnect(app: ASGIApp, scope: Scope, receive: Receive, send: Send, record: RequestRecord) -> None:
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
            record.client_disconnected = True
            handler.cancel()
        try:
            await handler
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not gone or (current is not None and current.cancelling()):
                raise  # not our cancellation: this request itself is being cancelled
    finally:
        watcher.cancel()
        if not handler.done():
            handler.cancel()


async def watch_for_disconnect(receive: Receive, body_read: asyncio.Event) -> None:
    """Return when the client disconnects (only listened for once the app has read the whole body)."""
    await body_read.wait()
    while (await receive())["type"] != "http.disconnect":
        pass
