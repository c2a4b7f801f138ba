"""Admission control (app.admission): a bounded number of inference requests per model, refusals
before the body is read, and handlers cancelled when their client disconnects.

The middleware is driven with plain ASGI messages around a stand-in app that holds each request
until the test releases it, so every assertion is about which requests got in, never about timing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from app.admission import MAX_TIMED_KEYS, AdmissionControl, count_against
from app.errors import Overloaded
from app.main import create_app
from app.middleware import RequestContext
from app.observability import Metrics
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


def start(middleware: Any, client: Client) -> asyncio.Task[None]:
    return asyncio.create_task(middleware(client.scope, client.receive, client.send))


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_one_request_over_the_limit_gets_a_503_with_retry_after_before_its_body_is_read() -> None:
    app = HeldApp()
    gate = AdmissionControl(app, paths=PATHS, limit=2)
    admitted = [Client(query="model=a"), Client(query="model=a")]
    tasks = [start(gate, client) for client in admitted]
    await settle()

    refused = Client(query="model=a")
    await gate(refused.scope, refused.receive, refused.send)

    assert refused.status == 503
    assert refused.body()["error"]["type"] == "overloaded"
    assert int(refused.header("retry-after") or "0") >= 1
    assert refused.body_reads == 0  # refused before reading the body
    assert app.entered == ["model=a", "model=a"]  # the app never saw it

    app.release.set()
    await asyncio.gather(*tasks)
    assert [client.status for client in admitted] == [200, 200]
    later = Client(query="model=a")  # the slots are free again
    await gate(later.scope, later.receive, later.send)
    assert later.status == 200


async def test_each_model_has_its_own_limit() -> None:
    app = HeldApp()
    gate = AdmissionControl(app, paths=PATHS, limit=1, known_models=lambda: {"a", "b"})
    busy = start(gate, Client(query="model=a"))
    other_model = start(gate, Client(query="model=b"))
    default_model = start(gate, Client())  # no model named: counted under the route's default
    await settle()

    assert sorted(app.entered) == ["/v1/denoise", "model=a", "model=b"]
    app.release.set()
    await asyncio.gather(busy, other_model, default_model)


async def test_names_the_registry_does_not_know_share_their_routes_count() -> None:
    app = HeldApp()
    gate = AdmissionControl(app, paths=PATHS, limit=1, known_models=lambda: {"real"})
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
    they have resolved it), answering 503 when that model is at its limit; else waits to be released."""

    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body", False):
            pass
        try:
            count_against(scope, self.model)
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
    gate = AdmissionControl(app, paths=PATHS, limit=2, known_models=lambda: {"real", "other"})
    # Each request names a new made-up model, or another real one, in the query; the body names "real".
    clients = [Client(query=f"model=made-up-{i}") for i in range(3)] + [Client(query="model=other")]
    tasks = [start(gate, client) for client in clients]
    await settle()

    assert len(app.entered) == 2  # the limit of "real", whatever the queries said
    assert gate.in_flight == {"real": 2}
    app.release.set()
    await asyncio.gather(*tasks)
    assert sorted(client.status or 0 for client in clients) == [200, 200, 503, 503]
    assert gate.in_flight == {}


async def test_bookkeeping_stays_bounded_under_a_stream_of_made_up_names() -> None:
    app = HeldApp()
    app.release.set()
    gate = AdmissionControl(app, paths=PATHS, limit=4, known_models=lambda: {"real"})
    for i in range(5000):
        client = Client(query=f"model=name-{i}")
        await gate(client.scope, client.receive, client.send)
        assert client.status == 200

    assert gate.in_flight == {}  # no counter outlives its requests
    assert list(gate.seconds_per_request) == ["the default model of /v1/denoise"]


async def test_response_times_are_kept_for_a_bounded_number_of_models() -> None:
    names = {f"model-{i}" for i in range(MAX_TIMED_KEYS + 50)}
    app = HeldApp()
    app.release.set()
    gate = AdmissionControl(app, paths=PATHS, limit=4, known_models=lambda: names)
    for name in sorted(names):
        client = Client(query=f"model={name}")
        await gate(client.scope, client.receive, client.send)

    assert len(gate.seconds_per_request) == MAX_TIMED_KEYS
    assert "model-999" in gate.seconds_per_request  # the most recent are kept


async def test_listing_and_management_routes_are_never_refused() -> None:
    app = HeldApp()
    gate = AdmissionControl(app, paths=PATHS, limit=1)
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
    gate = AdmissionControl(app, paths=PATHS, limit=4)
    stack = RequestContext(gate, metrics)
    client = Client()
    task = start(stack, client)
    await settle()
    assert app.entered == ["/v1/denoise"] and not app.cancelled

    client.disconnect.set()
    await asyncio.wait_for(task, timeout=10)  # the middleware returns: nothing is left waiting

    assert app.cancelled == ["/v1/denoise"]
    assert client.status is None  # nobody to answer
    assert 'status="499"' in metrics.render().decode()
    assert gate.in_flight == {}


async def test_a_request_answered_normally_is_not_cancelled_by_the_disconnect_that_follows() -> None:
    app = HeldApp()
    app.release.set()
    gate = AdmissionControl(app, paths=PATHS, limit=1)
    client = Client()
    client.disconnect.set()  # the server reports a disconnect as soon as the answer is complete

    await gate(client.scope, client.receive, client.send)

    assert client.status == 200 and not app.cancelled
    assert gate.in_flight == {}


def test_the_service_installs_admission_control_with_the_configured_limit_on_the_model_routes(
    settings: Settings,
) -> None:
    app = create_app(settings.model_copy(update={"max_requests_in_flight": 7}))
    [admission] = [m.kwargs for m in app.user_middleware if m.cls is AdmissionControl]
    assert admission["limit"] == 7
    assert admission["max_loop_lag_ms"] == settings.max_loop_lag_ms
    assert set(admission["paths"]) == {
        "/v1/denoise",
        "/v1/super-resolve",
        "/v1/reconstruct",
        "/v1/embeddings",
        "/v1/vae/encode",
        "/v1/vae/decode",
        "/v1/vae/sample",
        "/v1/vae/interpolate",
        "/v1/vae/manifold",
    }


@pytest.mark.parametrize("limit", [0, -1])
def test_the_limit_must_be_positive(limit: int) -> None:
    with pytest.raises(ValueError):
        Settings(max_requests_in_flight=limit)


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
    stack = RequestContext(AdmissionControl(app, paths=PATHS, limit=1), metrics)
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


async def test_a_loop_that_stays_late_shrinks_the_allowance_and_one_that_keeps_time_restores_it() -> None:
    app = HeldApp()
    gate = AdmissionControl(app, paths=PATHS, limit=8, max_loop_lag_ms=25)
    gate.observe_loop_lag(0.5)  # one late check is a burst of answers, not a backlog
    gate.observe_loop_lag(0.001)
    gate.observe_loop_lag(0.5)
    assert gate.allowance == 8

    for _ in range(3):  # late three times in a row: a backlog
        gate.observe_loop_lag(0.5)
    assert gate.allowance == 1  # cut by 25 ms / 500 ms, down to one request at a time
    admitted = start(gate, Client())
    await settle()
    refused = Client()
    await gate(refused.scope, refused.receive, refused.send)
    assert refused.status == 503 and app.entered == ["/v1/denoise"]

    for _ in range(20):
        gate.observe_loop_lag(0.0)
    assert gate.allowance == 8  # back to the limit, one more per check on time
    app.release.set()
    await admitted


def test_without_a_lag_limit_the_allowance_is_the_limit() -> None:
    gate = AdmissionControl(HeldApp(), paths=PATHS, limit=8, max_loop_lag_ms=0)
    assert gate.max_loop_lag_s == 0 and gate.allowance == 8
