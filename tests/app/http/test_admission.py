"""Admission control (app.http.admission): inference requests admitted by their expected wait against the queue
budget and the deadline, refusals before the body is read (and at the front door, app.process.front_door), and
handlers cancelled when their client disconnects.

Admission is driven with plain ASGI messages around a stand-in app that holds each request
until the test releases it; the measured cost per image is set by the test where an assertion depends
on it, so every assertion is about which requests got in, never about timing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from app.errors import Overloaded
from app.http.admission import AdmissionControl, ModelLoad
from app.http.middleware import RefusalSummary, RequestPipeline
from app.http.request_record import record_of
from app.main import create_app
from app.observability import Metrics
from app.process.drain import Drain
from app.settings import Settings

PATHS = {"/v1/denoise", "/v1/vae/sample"}


class HeldApp:
    """An inference route stand-in: reads the body, then waits until released, then answers 200."""

    def __init__(self) -> None:
        self.entered: list[str] = []
        self.cancelled: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = scope["query_string"].decode() or scope["path"]
        self.entered.append(name)
        while (await receive()).get("more_body", False):
            pass
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(name)
            raise
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})


class Client:
    """One HTTP request as the server would hand it to the app; records what the app sends back."""

    def __init__(self, path: str = "/v1/denoise", query: str = "", method: str = "POST") -> None:
        self.scope: dict[str, Any] = {
            "type": "http",
            "method": method,
            "path": path,
            "query_string": query.encode(),
            "headers": [],
        }
        self.sent: list[Message] = []
        self.body_reads = 0
        self.disconnect = asyncio.Event()

    async def receive(self) -> Message:
        self.body_reads += 1
        if self.body_reads == 1:
            return {"type": "http.request", "body": b"image bytes", "more_body": False}
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None

    def header(self, name: str) -> str | None:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return next((v.decode() for k, v in start["headers"] if k.decode().lower() == name), None)

    def body(self) -> dict[str, Any]:
        return dict(json.loads(b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")))


class Gate:
    """Admission control around `app` as the request pipeline runs it (without the rest of the pipeline)."""

    def __init__(self, app: Any, control: AdmissionControl) -> None:
        self.app = app
        self.control = control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.control.guards(scope["path"]):
            await self.control.serve(self.app, scope, receive, send, record_of(scope))
        else:
            await self.app(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.control, name)


def control_with(
    deadline_s: float = 1.0, max_images: int = 1000, budget_s: float = 100.0, **options: Any
) -> AdmissionControl:
    """By default the budget is far off, so that only the deadline and the image bound refuse."""
    options.setdefault("known_models", lambda: {"a", "b"})  # the models the registry knows
    return AdmissionControl(budget_s=budget_s, deadline_s=deadline_s, max_images=max_images, paths=PATHS, **options)


def gate_with(app: Any, **options: Any) -> Any:
    return Gate(app, control_with(**options))


def pipeline(app: Any, control: AdmissionControl, metrics: Metrics) -> RequestPipeline:
    """The whole request pipeline (the access log, metrics, refusal summary) around `app`."""
    refusals = RefusalSummary(metrics)
    return RequestPipeline(app, metrics, control, refusals, Drain(0), max_body_bytes=10**6, body_timeout_s=60)


def measured(gate: Any, key: str, seconds_per_image: float) -> ModelLoad:
    """Give a model key a measured cost per image, as if it had served requests before."""
    load = gate.loads[key]
    load.seconds_per_image = seconds_per_image
    return load


def start(middleware: Any, client: Client) -> asyncio.Task[None]:
    return asyncio.create_task(middleware(client.scope, client.receive, client.send))


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_request_whose_expected_wait_exceeds_the_deadline_gets_a_503_before_its_body_is_read() -> None:
    app = HeldApp()
    gate = gate_with(app, deadline_s=1.0)
    measured(gate, "model 'a'", seconds_per_image=0.4)  # two requests ahead: 0.8 s; three: 1.2 s
    admitted = [Client(query="model=a"), Client(query="model=a")]
    tasks = [start(gate, client) for client in admitted]
    await settle()
    third = Client(query="model=a")  # expected wait 0.8 s: within the deadline
    tasks.append(start(gate, third))
    await settle()

    refused = Client(query="model=a")  # expected wait 1.2 s
    await gate(refused.scope, refused.receive, refused.send)

    assert refused.status == 503
    assert refused.body()["error"]["type"] == "overloaded"
    assert "expected wait of 1.20 s" in refused.body()["error"]["message"]
    assert refused.header("retry-after") == "2"  # the estimate, rounded up
    assert refused.body_reads == 0  # refused before reading the body
    assert app.entered == ["model=a"] * 3  # the app never saw it

    app.release.set()
    await asyncio.gather(*tasks)
    assert [client.status for client in [*admitted, third]] == [200, 200, 200]
    assert gate.loads["model 'a'"].in_flight == 0
    later = Client(query="model=a")  # nothing ahead any more
    await gate(later.scope, later.receive, later.send)
    assert later.status == 200


async def test_a_model_without_a_measured_cost_admits_up_to_the_images_its_queue_holds() -> None:
    app = HeldApp()
    gate = gate_with(app, max_images=3)
    tasks = [start(gate, Client()) for _ in range(3)]
    await settle()
    refused = Client()
    await gate(refused.scope, refused.receive, refused.send)
    assert refused.status == 503 and len(app.entered) == 3
    app.release.set()
    await asyncio.gather(*tasks)


async def test_requests_of_many_images_count_as_many_images_ahead() -> None:
    load = ModelLoad()
    load.admit(0.0)
    load.finish(0.06, images=64)  # one answered request of 64 images, 60 ms busy
    assert load.seconds_per_image == pytest.approx(0.06 / 64)
    for _ in range(30):  # the average request size follows what requests carry
        load.admit(0.0)
        load.finish(0.0, images=64)
    assert load.images_per_request == pytest.approx(64, rel=0.05)
    load.admit(0.0)
    load.admit(0.0)
    assert load.drain_s == pytest.approx(2 * load.images_per_request * load.seconds_per_image)


def test_the_cost_per_image_is_busy_time_not_idle_time() -> None:
    load = ModelLoad()
    for second in range(10):  # one request of 10 ms every second: busy 10 ms per image, idle the rest
        load.admit(float(second))
        load.finish(second + 0.01, images=1)
    assert load.seconds_per_image == pytest.approx(0.01, rel=1e-6)
    busy = ModelLoad()  # 100 requests in flight answered 1 ms apart: the queue drains at 1 ms per image
    for _ in range(100):
        busy.admit(0.0)
    for index in range(100):
        busy.finish(0.001 * (index + 1), images=1)
    assert busy.seconds_per_image == pytest.approx(0.001, rel=1e-6)


async def test_each_model_has_its_own_estimate() -> None:
    app = HeldApp()
    gate = gate_with(app, deadline_s=1.0)
    measured(gate, "model 'a'", seconds_per_image=2.0)  # one request ahead is already over the deadline
    busy = start(gate, Client(query="model=a"))
    other_model = start(gate, Client(query="model=b"))
    default_model = start(gate, Client())  # no model named: counted under the route's default
    await settle()
    refused = Client(query="model=a")
    await gate(refused.scope, refused.receive, refused.send)

    assert refused.status == 503
    assert sorted(app.entered) == ["/v1/denoise", "model=a", "model=b"]
    app.release.set()
    await asyncio.gather(busy, other_model, default_model)


async def test_listing_and_management_routes_are_never_refused() -> None:
    app = HeldApp()
    gate = gate_with(app, max_images=1)
    busy = start(gate, Client())
    await settle()
    others = [
        Client("/v1/models", method="GET"),
        Client("/v1/models/mnist-ae/unload"),
        Client("/healthz", method="GET"),
    ]
    tasks = [start(gate, client) for client in others]
    await settle()

    assert len(app.entered) == 4
    app.release.set()
    await asyncio.gather(busy, *tasks)
    assert [client.status for client in others] == [200, 200, 200]


async def test_a_client_that_disconnects_has_its_handler_cancelled_and_is_logged_as_499() -> None:
    app = HeldApp()
    metrics = Metrics()
    gate = control_with()
    stack = pipeline(app, gate, metrics)
    client = Client()
    task = start(stack, client)
    await settle()
    assert app.entered == ["/v1/denoise"] and not app.cancelled

    client.disconnect.set()
    await asyncio.wait_for(task, timeout=10)  # the middleware returns: nothing is left waiting

    assert app.cancelled == ["/v1/denoise"]
    assert client.status is None  # nobody to answer
    assert 'status="499"' in metrics.render().decode()
    assert gate.loads["the default model of /v1/denoise"].in_flight == 0


async def test_a_request_answered_normally_is_not_cancelled_by_the_disconnect_that_follows() -> None:
    app = HeldApp()
    app.release.set()
    gate = gate_with(app)
    client = Client()
    client.disconnect.set()  # the server reports a disconnect as soon as the answer is complete

    await gate(client.scope, client.receive, client.send)

    assert client.status == 200 and not app.cancelled
    assert gate.loads["the default model of /v1/denoise"].in_flight == 0


def test_the_service_installs_admission_control_with_its_budget_deadline_and_queue_bound_on_the_model_routes(
    settings: Settings,
) -> None:
    update = {"batch_timeout_s": 7.0, "batch_max_queue_images": 99, "queue_budget_ms": 250.0}
    app = create_app(settings.model_copy(update=update))
    admission = app.state.admission
    assert admission.deadline_s == 7.0 and admission.max_images == 99 and admission.budget_s == 0.25
    assert admission.min_requests == 2 * settings.batch_max_size
    assert app.state.front_door.admission is admission  # the protocol's early refusals ask the same counts
    assert set(admission.paths) == {
        "/v1/denoise",
        "/v1/super-resolve",
        "/v1/reconstruct",
        "/v1/embeddings",
        "/v1/vae/encode",
        "/v1/vae/decode",
        "/v1/vae/sample",
        "/v1/vae/interpolate",
        "/v1/vae/manifold",
        "/v1/vae/restyle",
    }
    assert admission.guards("/v2/models/mnist-ae.embed/infer")  # the protocol's infer path names its model
    assert admission.route_of("/v2/models/anything.embed/infer") == "/v2/models/{model_name}/infer"


class RecordList(logging.Handler):
    """Keeps the records of one logger, whether or not that logger also propagates to pytest's capture."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_refusals_are_logged_as_one_summary_line_with_their_count() -> None:
    app = HeldApp()
    metrics = Metrics()
    stack = pipeline(app, control_with(max_images=1), metrics)
    stack.refusals.interval_s = 0.01
    access = logging.getLogger("app.access")
    captured = RecordList()
    access.addHandler(captured)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        busy = start(stack, Client())
        await settle()
        for _ in range(3):
            refused = Client()
            await stack(refused.scope, refused.receive, refused.send)
            assert refused.status == 503
        assert not captured.records  # nothing logged per refusal
        await asyncio.sleep(0.1)  # the summary is written when the period ends

        lines = [(r.getMessage(), getattr(r, "refused", None), getattr(r, "status", None)) for r in captured.records]
        assert lines == [("requests refused: overloaded", 3, 503)]
        assert 'ae_requests_total{method="POST",route="/v1/denoise",status="503"} 3.0' in metrics.render().decode()
        app.release.set()
        await busy
    finally:
        access.removeHandler(captured)
        access.setLevel(level)


# -- the queue budget -----------------------------------------------------------------------------------


async def test_beyond_min_requests_a_request_is_admitted_only_within_the_budget() -> None:
    app = HeldApp()
    gate = gate_with(app, deadline_s=30.0, budget_s=0.25, min_requests=2)
    measured(gate, "model 'a'", seconds_per_image=0.1)
    admitted = []
    for _ in range(3):  # expected waits 0, 0.1 (within min_requests) and 0.2 s (within the budget)
        admitted.append(start(gate, Client(query="model=a")))
        await settle()
    refused = Client(query="model=a")  # 0.3 s: over the budget, far within the deadline

    await gate(refused.scope, refused.receive, refused.send)

    assert refused.status == 503 and len(app.entered) == 3 and refused.body_reads == 0
    assert refused.body()["error"]["type"] == "overloaded"
    assert "expected wait of 0.30 s (budget 0.25 s" in refused.body()["error"]["message"]
    assert refused.header("retry-after") == "1"  # the drain time rounded up, at least a second
    app.release.set()
    await asyncio.gather(*admitted)


async def test_the_budget_never_refuses_the_first_min_requests() -> None:
    """So many keep the model busy (two full batches); a closed group of polite clients no larger than that is
    never refused because the machine is slow."""
    app = HeldApp()
    gate = gate_with(app, deadline_s=30.0, budget_s=0.001, min_requests=4)
    measured(gate, "the default model of /v1/denoise", seconds_per_image=1.0)  # 3 ahead: 3 s, far over
    gate.observe_loop_lag(5.0)  # however late the loop runs
    admitted = [start(gate, Client()) for _ in range(4)]
    await settle()
    refused = Client()
    await gate(refused.scope, refused.receive, refused.send)
    assert len(app.entered) == 4 and refused.status == 503
    app.release.set()
    await asyncio.gather(*admitted)


async def test_the_event_loops_lag_counts_as_queue_and_fades_once_it_keeps_time() -> None:
    app = HeldApp()
    gate = gate_with(app, deadline_s=30.0, budget_s=0.25, min_requests=1)
    measured(gate, "the default model of /v1/denoise", seconds_per_image=0.1)
    held = start(gate, Client())  # one ahead: 0.1 s
    await settle()
    gate.observe_loop_lag(0.2)  # requests unread in the socket buffers wait this long before anything
    assert gate.refusal("/v1/denoise", b"") is not None  # 0.1 s ahead + 0.2 s lag: over the budget
    refused = Client()
    await gate(refused.scope, refused.receive, refused.send)
    assert refused.status == 503 and "expected wait of 0.30 s" in refused.body()["error"]["message"]

    for _ in range(20):  # the loop keeps time again: the lag halves per check, then counts as none
        gate.observe_loop_lag(0.0)
    assert gate.loop_lag_s == 0.0
    admitted = start(gate, Client())
    await settle()
    assert len(app.entered) == 2
    app.release.set()
    await asyncio.gather(held, admitted)


async def test_under_pressure_every_request_is_held_to_the_budget_and_a_late_loop_refuses() -> None:
    """Once a request has been refused (a flood: polite clients within min_requests never are), the floor of
    min_requests no longer holds: a saturated loop sheds served work so that refusals stay prompt."""
    app = HeldApp()
    gate = gate_with(app, deadline_s=30.0, budget_s=0.25, min_requests=100)
    measured(gate, "the default model of /v1/denoise", seconds_per_image=0.001)
    gate.observe_loop_lag(0.07)  # over 0.25 s / 4, far under the budget
    held = start(gate, Client())
    await settle()
    assert gate.refusal("/v1/denoise", b"") is None  # not under pressure: one in flight is far below the floor

    gate.control.pressure_until = time.perf_counter() + 60  # as if a request had just been refused
    assert gate.refusal("/v1/denoise", b"") is not None  # the late loop refuses below min_requests now
    gate.observe_loop_lag(0.05)  # decays to 0.06 s: under a quarter of the budget again
    assert gate.refusal("/v1/denoise", b"") is None
    measured(gate, "the default model of /v1/denoise", seconds_per_image=0.3)  # one ahead: 0.36 s with the lag
    assert gate.refusal("/v1/denoise", b"") is not None  # over the budget, though far below min_requests
    app.release.set()
    await held


async def test_without_a_measured_cost_two_full_batches_are_admitted_and_no_more() -> None:
    """A flood at start-up is not admitted on an estimate of zero."""
    app = HeldApp()
    gate = gate_with(app, min_requests=3)
    admitted = [start(gate, Client()) for _ in range(3)]
    await settle()
    refused = Client()
    await gate(refused.scope, refused.receive, refused.send)
    assert refused.status == 503 and len(app.entered) == 3
    app.release.set()
    await asyncio.gather(*admitted)


async def test_a_refusal_puts_the_service_under_pressure_for_a_while() -> None:
    gate = control_with(max_images=1)
    gate.loads["model 'a'"].in_flight = 1
    assert gate.pressure_until == 0.0
    assert gate.refusal("/v1/denoise", b"model=a") is not None
    assert gate.pressure_until > time.perf_counter()


async def test_the_front_door_question_refuses_what_serve_would_and_creates_no_bookkeeping() -> None:
    app = HeldApp()
    gate = gate_with(app, max_images=1)
    assert gate.refusal("/v1/denoise", b"model=a") is None  # nothing in flight
    assert gate.refusal("/v1/models", b"") is None  # not a model route
    assert dict(gate.loads) == {}
    held = start(gate, Client(query="model=a"))
    await settle()
    error = gate.refusal("/v1/denoise", b"model=a")
    assert isinstance(error, Overloaded) and error.headers["Retry-After"] == "1"
    assert gate.refusal("/v1/denoise", b"model=b") is None  # another model's count
    assert gate.refusal("/v1/denoise", b"model=made-up") is None  # the route's default: nothing in flight
    assert set(gate.loads) == {"model 'a'"}
    app.release.set()
    await held


# -- counted against the model that serves: what clients write cannot steer it ------------------------


async def test_names_the_registry_does_not_know_share_their_routes_count() -> None:
    app = HeldApp()
    gate = gate_with(app, known_models=lambda: {"real"})
    measured(gate, "the default model of /v1/denoise", seconds_per_image=2.0)  # one ahead is over the deadline
    held = start(gate, Client(query="model=made-up-1"))
    await settle()

    another = Client(query="model=made-up-2")  # a fresh name buys no fresh allowance
    await gate(another.scope, another.receive, another.send)

    assert another.status == 503 and app.entered == ["model=made-up-1"]
    assert "the default model of /v1/denoise" in another.body()["error"]["message"]
    app.release.set()
    await held


class ResolvingApp(HeldApp):
    """Reads the body, then counts the request against the model the body names (as the routes do once
    they have resolved it), answering 503 when that model cannot take it; else waits to be released."""

    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body", False):
            pass
        try:
            record_of(scope).serving(self.model, 1)  # what the service's accounting does
        except Overloaded as exc:
            await send({"type": "http.response.start", "status": exc.status_code, "headers": []})
            await send({"type": "http.response.body", "body": exc.message.encode()})
            return
        self.entered.append(scope["query_string"].decode())
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})


async def test_the_per_model_bound_holds_when_the_query_names_something_else_than_the_body() -> None:
    app = ResolvingApp("real")
    gate = gate_with(app, deadline_s=1.0, known_models=lambda: {"real", "other"})
    measured(gate, "model 'real'", seconds_per_image=0.4)  # 3 ahead would wait 1.2 s: over the deadline
    # Each request names a new made-up model, or another real one, in the query; the body names "real".
    clients = [Client(query=f"model=made-up-{i}") for i in range(3)] + [Client(query="model=other")]
    tasks = []
    for client in clients:
        tasks.append(start(gate, client))
        await settle()

    assert len(app.entered) == 3  # what "real" can serve in time, whatever the queries said
    assert gate.loads["model 'real'"].in_flight == 3
    app.release.set()
    await asyncio.gather(*tasks)
    assert sorted(client.status or 0 for client in clients) == [200, 200, 200, 503]
    assert all(load.in_flight == 0 for load in gate.loads.values())


async def test_bookkeeping_stays_bounded_under_a_stream_of_made_up_names() -> None:
    app = HeldApp()
    app.release.set()
    gate = gate_with(app, known_models=lambda: {"real"})
    for i in range(5000):
        client = Client(query=f"model=name-{i}")
        await gate(client.scope, client.receive, client.send)
        assert client.status == 200

    assert list(gate.loads) == ["the default model of /v1/denoise"]  # one load per route, not per name


async def test_a_request_that_names_no_model_is_counted_against_its_routes_default_model() -> None:
    """Under a flood of requests without `?model=`, the budget must see the queue of the model they join:
    counted under the route's own key until the service chose the model, they were never refused (the
    route's key has requests in flight only briefly and no measured cost)."""
    app = HeldApp()
    gate = gate_with(app, route_default=lambda path: "a" if path == "/v1/denoise" else None)
    measured(gate, "model 'a'", seconds_per_image=2.0)  # one ahead is over the 1 s deadline
    held = start(gate, Client())
    await settle()
    assert gate.loads["model 'a'"].in_flight == 1

    unnamed, named_other = Client(), Client(query="model=b")
    await gate(unnamed.scope, unnamed.receive, unnamed.send)
    assert unnamed.status == 503 and "model 'a'" in unnamed.body()["error"]["message"]
    other = start(gate, named_other)  # another model's queue is not the default's
    await settle()
    assert named_other.status is None and gate.loads["model 'b'"].in_flight == 1
    app.release.set()
    await asyncio.gather(held, other)


def test_every_model_route_has_a_default_model_for_admission() -> None:
    from app.application import MODEL_ROUTERS, ROUTE_DEFAULT_KEYS
    from app.settings import DefaultModels

    paths = {getattr(route, "path", "") for router in MODEL_ROUTERS for route in router.routes}
    assert set(ROUTE_DEFAULT_KEYS) == paths
    assert set(ROUTE_DEFAULT_KEYS.values()) <= set(DefaultModels().as_dict())
