"""Overload against a real `ae-serve` process: a bounded open-loop flood gets 200s and fast-path 503s with
Retry-After and nothing else, and the server is ready afterwards (app.http.admission, app.process.front_door).

The queue budget is set tiny and the batch small (two batches of 2 = 4 requests in flight are never refused
by the budget), so that the flood is certainly refused in part whatever the machine's speed; which requests
are refused depends on timing, so the assertions are about what every answer is, never about how many or
how fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from conftest import REPO_ROOT, free_port
from drawn_digits import digit_batch, png_bytes
from test_admission import Client, HeldApp, control_with, settle
from tiny_checkpoints import DEFAULT_MODELS

from app.errors import Overloaded
from app.http.middleware import RefusalSummary
from app.http.request_record import record_of
from app.observability import Metrics
from app.process.drain import Drain
from app.process.front_door import FrontDoor

FLOOD_REQUESTS = 2000
FLOOD_FACTOR = 10
CLIENT_TIMEOUT_S = 30.0


@contextmanager
def running_ae_serve(checkpoints_dir: Path, extra_env: dict[str, str]) -> Iterator[str]:
    """`python -m app.process.cli` (what `ae-serve` runs: the guarded protocol and its front door) on a free port."""
    port = free_port()
    env = {
        **os.environ,
        "AE_CHECKPOINTS_DIR": str(checkpoints_dir),
        "AE_DEVICE": "cpu",
        "AE_DEFAULT_MODELS": json.dumps(DEFAULT_MODELS),
        "AE_TORCH_THREADS": "1",
        **extra_env,
    }
    log_path = checkpoints_dir.parent / f"ae-serve-{port}.log"
    with log_path.open("w") as log:
        command = [sys.executable, "-m", "app.process.cli", "--port", str(port)]
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, log_path.read_text()[-2000:]
                try:
                    if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "ae-serve did not become ready within 120 s"
                time.sleep(0.2)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def closed_loop_rate(client: httpx.AsyncClient, body: bytes, clients: int = 8, requests_each: int = 10) -> float:
    """Requests per second that `clients` polite clients get: the rate the flood multiplies."""

    async def one_client() -> None:
        for _ in range(requests_each):
            await client.post("/v1/denoise", content=body, headers={"content-type": "image/png"})

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    return clients * requests_each / (time.perf_counter() - started)


async def open_loop_flood(base_url: str, body: bytes) -> list[httpx.Response | BaseException]:
    """FLOOD_REQUESTS requests due at FLOOD_FACTOR times the closed-loop rate, whether answered or not."""
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=CLIENT_TIMEOUT_S) as client:
        interval = 1 / (FLOOD_FACTOR * await closed_loop_rate(client, body))

        async def one(index: int) -> httpx.Response:
            await asyncio.sleep(index * interval)
            headers = {"content-type": "image/png", "x-request-id": f"flood-{index}"}
            return await client.post("/v1/denoise", content=body, headers=headers)

        return list(await asyncio.gather(*(one(i) for i in range(FLOOD_REQUESTS)), return_exceptions=True))


def test_a_flood_gets_200s_and_503s_with_retry_after_and_nothing_else(checkpoints_dir: Path) -> None:
    body = png_bytes(digit_batch(1, seed=5)[0])
    env = {"AE_QUEUE_BUDGET_MS": "1", "AE_BATCH_MAX_SIZE": "2"}
    with running_ae_serve(checkpoints_dir, env) as base_url:
        answers = asyncio.run(open_loop_flood(base_url, body))
        ready = httpx.get(f"{base_url}/readyz", timeout=10)
        served_after = httpx.post(
            f"{base_url}/v1/denoise", content=body, headers={"content-type": "image/png"}, timeout=30
        )

    failures = [repr(answer) for answer in answers if isinstance(answer, BaseException)]
    assert not failures, failures[:5]  # no timeout, no reset, no broken answer: every request was answered
    responses = [answer for answer in answers if isinstance(answer, httpx.Response)]
    statuses = Counter(response.status_code for response in responses)
    assert set(statuses) <= {200, 503} and statuses[503] > 0, statuses
    for index, response in enumerate(responses):
        assert response.headers["x-request-id"] == f"flood-{index}"
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1
            assert int(response.headers["content-length"]) == len(response.content)
            error = response.json()["error"]
            assert error["type"] == "overloaded" and "expected wait" in error["message"]
    assert ready.status_code == 200
    assert served_after.status_code == 200


async def test_the_front_door_answer_is_the_pipelines_503_as_bytes() -> None:
    control = control_with(max_images=1)
    drain = Drain(0)
    metrics = Metrics()
    door = FrontDoor(control, RefusalSummary(metrics), drain)
    held_app = HeldApp()
    client = Client(query="model=a")
    held = asyncio.create_task(
        control.serve(held_app, client.scope, client.receive, client.send, record_of(client.scope))
    )
    await settle()
    headers = [(b"x-request-id", b"abc-1"), (b"content-length", b"11")]
    default_headers = [(b"server", b"uvicorn")]
    refusal = door.refusal("POST", "/v1/denoise", b"model=a", headers, True, default_headers)
    assert refusal is not None
    answer, keep_alive = refusal
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert lines[0] == "HTTP/1.1 503 Service Unavailable" and keep_alive
    assert fields["content-type"] == "application/json" and int(fields["content-length"]) == len(body)
    assert fields["retry-after"] == "1" and fields["x-request-id"] == "abc-1" and fields["server"] == "uvicorn"
    assert json.loads(body)["error"]["type"] == Overloaded.type
    assert 'ae_requests_total{method="POST",route="/v1/denoise",status="503"} 1.0' in metrics.render().decode()

    big = door.refusal("POST", "/v1/denoise", b"model=a", [(b"content-length", b"9999999")], True, [])
    assert big is not None and not big[1] and b"connection: close" in big[0]  # not worth reading past
    drain.started_at = 0.0  # draining: every answer closes its connection
    closing = door.refusal("POST", "/v1/denoise", b"model=a", headers, True, [])
    assert closing is not None and not closing[1] and b"connection: close" in closing[0]
    assert door.refusal("GET", "/v1/models", b"", [], True, []) is None
    held_app.release.set()
    await held
