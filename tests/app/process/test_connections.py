"""Slow clients, vanished clients and the drain, at the level where each is handled.

- In-process (the app's ASGI interface): the body deadline's 408, a client gone mid-body as a 499, and
  what the app does while draining (readiness 503, `Connection: close` on every answer).
- Over a real `ae-serve` process: the connection cap (eviction of a late client, else a 503 refusal) and
  the protocol's own body deadline when the app answered without reading the body.
The header deadline, the drain under SIGTERM and the rest are measured by tests/app/process/test_chaos_short.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import REPO_ROOT, free_port, stop_server
from drawn_digits import digit_batch, png_bytes
from fastapi.testclient import TestClient
from starlette.types import Message
from tiny_checkpoints import DEFAULT_MODELS

from app.process.drain import Drain

DIGIT = png_bytes(digit_batch(1, seed=3)[0])
API_KEY = "connections-test-key"


def http_scope(path: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(name.encode(), value.encode()) for name, value in headers.items()],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
    }


async def call(app: Any, scope: dict[str, Any], after_first_chunk: Callable[[], Any]) -> list[Message]:
    """Run one request through the app: a first piece of the body, then whatever `after_first_chunk` does."""
    sent: list[Message] = []
    chunks = 0

    async def receive() -> Message:
        nonlocal chunks
        chunks += 1
        if chunks == 1:
            return {"type": "http.request", "body": DIGIT[:20], "more_body": True}
        return dict(await after_first_chunk())

    async def send(message: Message) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), timeout=30)
    return sent


def answer_of(sent: list[Message]) -> tuple[int, dict[str, str], bytes]:
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], headers, body


async def test_a_body_that_does_not_arrive_in_time_is_a_408_that_closes_the_connection(
    make_client: Callable[..., TestClient],
) -> None:
    app = make_client(body_timeout_s=0.3).app
    scope = http_scope("/v1/denoise", {"content-type": "image/png", "content-length": str(len(DIGIT))})
    started = time.monotonic()

    sent = await call(app, scope, lambda: asyncio.sleep(3600))  # the rest of the body never comes

    status, headers, body = answer_of(sent)
    assert status == 408 and headers["connection"] == "close"
    assert json.loads(body)["error"]["type"] == "request_timeout"
    assert 0.3 <= time.monotonic() - started < 5


async def test_a_client_gone_mid_body_is_a_499_in_the_metrics_with_no_stack_trace(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_client().app
    scope = http_scope("/v1/denoise", {"content-type": "image/png", "content-length": str(len(DIGIT))})

    async def disconnect() -> Message:
        return {"type": "http.disconnect"}

    errors = logging.getLogger("app.errors")
    errors.addHandler(caplog.handler)
    try:
        sent = await call(app, scope, disconnect)
    finally:
        errors.removeHandler(caplog.handler)

    assert answer_of(sent)[0] == 499  # what the server would have dropped: nobody is there to read it
    assert 'route="/v1/denoise",method="POST",status="499"' in app.state.metrics.render().decode() or (
        'method="POST",route="/v1/denoise",status="499"' in app.state.metrics.render().decode()
    )
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]


def test_while_draining_readiness_is_503_and_every_answer_closes_its_connection(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    assert client.get("/readyz").status_code == 200
    client.app.state.drain.started_at = time.monotonic()  # type: ignore[attr-defined]  # what SIGTERM does first

    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["reasons"][0].startswith("shutting down")
    served = client.post("/v1/denoise", files={"image": ("d.png", DIGIT, "image/png")})
    assert served.status_code == 200  # requests are still served while draining
    assert {ready.headers["connection"], served.headers["connection"]} == {"close"}


def test_the_drain_takes_over_signals_only_from_a_uvicorn_server() -> None:
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(Drain(1.0).install()))
    thread.start()
    thread.join()
    assert results == [False]  # signals belong to the main thread
    assert Drain(1.0).install() is False  # pytest's main thread runs no uvicorn.Server


# -- over a real ae-serve process -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded_server(checkpoints_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """`python -m app.process.cli` (ae-serve), a cap of 4 connections, a 1 s body deadline and an API key; its port."""
    port = free_port()
    env = os.environ | {
        "AE_CHECKPOINTS_DIR": str(checkpoints_dir),
        "AE_DEVICE": "cpu",
        "AE_TORCH_THREADS": "1",
        "AE_DEFAULT_MODELS": json.dumps(DEFAULT_MODELS),
        "AE_MAX_CONNECTIONS": "4",
        "AE_BODY_TIMEOUT_S": "1",
        "AE_HEADER_TIMEOUT_S": "30",
        "AE_API_KEYS": API_KEY,
    }
    log = (tmp_path_factory.mktemp("guarded") / "server.log").open("w")
    command = [sys.executable, "-m", "app.process.cli", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, "ae-serve exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        time.sleep(0.5)  # the probes' connections are closed on the server's side too
        yield port
    finally:
        stop_server(process)
        log.close()


def partial_request(port: int) -> socket.socket:
    """A connection that sent half of a request's headers."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
    return connection


def read_all(connection: socket.socket) -> bytes:
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    return data


def refusal_at_the_cap(port: int, holders: list[socket.socket]) -> bytes | None:
    """A fifth connection's unsolicited answer while the four holders wait; None if the server was so slow
    that the oldest holder had already waited past EVICT_AFTER_S (then it evicts that one instead)."""
    fifth = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        readable, _, _ = select.select([fifth, holders[0]], [], [], 30)  # whichever the server answers
        assert readable, "the server answered neither the fifth connection nor the oldest holder"
        if fifth in readable:
            return read_all(fifth)  # the answer, then the server closes
        assert holders[0].recv(65536).startswith(b"HTTP/1.1 408 ")  # evicted: the other correct outcome
        return None
    finally:
        fifth.close()


def test_at_the_cap_a_new_connection_is_refused_unless_one_is_late_with_its_headers(guarded_server: int) -> None:
    # Connections are accepted in order, so the fifth finds the four holders registered; whether it is refused
    # or makes room depends only on how long the oldest has waited, on the server's clock: a server too slow
    # to answer within EVICT_AFTER_S of the first holder gets another try, not a failure.
    for _attempt in range(5):
        holders = [partial_request(guarded_server) for _ in range(4)]
        try:
            answer = refusal_at_the_cap(guarded_server, holders)
            if answer is None:
                continue
            assert answer.startswith(b"HTTP/1.1 503 "), answer[:100]
            assert b"retry-after: 1" in answer.lower()
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "too_many_connections"

            # Once the four have waited over EVICT_AFTER_S, a prompt client gets in: polled (a refusal is the
            # answer of "not yet"), since the server's clock, not ours, decides when they are late.
            deadline = time.monotonic() + 20  # well inside the 30 s header deadline of the holders
            while (probe := healthz_or_refusal(guarded_server)) != 200:
                assert probe == 503 and time.monotonic() < deadline, probe
                time.sleep(0.2)
            answers = []
            for holder in holders:
                holder.settimeout(0.5)
                try:
                    answers.append(holder.recv(65536))
                except TimeoutError:
                    answers.append(b"")
            assert answers[0].startswith(b"HTTP/1.1 408 "), answers  # the oldest made room, with its 408
            assert answers[1:] == [b"", b"", b""]  # the others still wait
            return
        finally:
            for holder in holders:
                holder.close()
            wait_for_room(guarded_server)
    pytest.fail("in five tries the server never answered a fifth connection within EVICT_AFTER_S")


def healthz_or_refusal(port: int) -> int:
    """/healthz on a new connection: 200, or 503 when the server refused the connection at its cap."""
    with httpx.Client(timeout=10) as client:
        try:
            return client.get(f"http://127.0.0.1:{port}/healthz").status_code
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            return 503  # refused before the request was read: the server may close before httpx reads it


def wait_for_room(port: int, timeout_s: float = 30) -> None:
    """Until the server's earlier connections are gone: a new one is served (polled, not slept on)."""
    deadline = time.monotonic() + timeout_s
    while healthz_or_refusal(port) != 200:
        assert time.monotonic() < deadline, "the server's earlier connections never went away"
        time.sleep(0.1)


def test_a_body_still_dripping_after_the_answer_is_cut_off(guarded_server: int) -> None:
    wait_for_room(guarded_server)  # the earlier tests' connections have gone
    connection = socket.create_connection(("127.0.0.1", guarded_server), timeout=10)
    started = time.monotonic()
    # No API key: the app answers 401 without reading the body, which then drips in a byte at a time.
    connection.sendall(
        b"POST /v1/denoise HTTP/1.1\r\nhost: x\r\ncontent-type: image/png\r\ncontent-length: 100000\r\n\r\n"
    )
    received = b""
    with pytest.raises((ConnectionError, BrokenPipeError)):
        for _ in range(100):
            connection.sendall(b"\0")
            connection.settimeout(0.2)
            try:
                chunk = connection.recv(65536)
                if not chunk:
                    raise ConnectionResetError("closed by the server")
                received += chunk
            except TimeoutError:
                pass
    assert received.startswith(b"HTTP/1.1 401 ")
    assert time.monotonic() - started < 10  # the 1 s body deadline (plus its grace), not the 100 bytes
    connection.close()


def test_a_body_too_slow_for_the_app_is_a_408(guarded_server: int) -> None:
    connection = socket.create_connection(("127.0.0.1", guarded_server), timeout=10)
    connection.sendall(
        b"POST /v1/denoise HTTP/1.1\r\nhost: x\r\ncontent-type: image/png\r\ncontent-length: 1000\r\n"
        + f"authorization: Bearer {API_KEY}\r\n\r\n".encode()
        + DIGIT[:10]
    )
    answer = read_all(connection)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert b"connection: close" in answer.lower()
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "request_timeout"
    connection.close()
