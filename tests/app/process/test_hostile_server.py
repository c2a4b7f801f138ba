"""Hostile input against a real uvicorn process: no 5xx, the body cap while reading, and a server
that is alive and ready afterwards. Also graceful shutdown on SIGTERM."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import REPO_ROOT, free_port, stop_server
from hostile_corpus import cases
from tiny_checkpoints import DEFAULT_MODELS

# Long enough that the test's probes, on a busy machine, reach the server while it drains.
DRAIN_S = 5

CORPUS = cases()


def test_the_corpus_is_broad() -> None:
    assert len(CORPUS) > 300
    assert len({name for name, *_ in CORPUS}) == len(CORPUS)  # every case is told apart in a failure


def test_no_hostile_request_gets_a_5xx_and_the_server_stays_ready(server: str) -> None:
    failures = []
    with httpx.Client(base_url=server, timeout=30) as client:
        for name, method, path, options in CORPUS:
            try:
                response = client.request(method, path, **options)
            except httpx.TransportError as exc:
                failures.append(f"{name}: {exc!r}")
                continue
            if response.status_code >= 500:
                failures.append(f"{name}: {response.status_code} {response.text[:200]}")
            elif response.status_code >= 400 and method != "HEAD":
                body = response.json()
                if set(body) != {"error"} or not body["error"].get("message"):
                    failures.append(f"{name}: {response.status_code} without the error shape: {response.text[:200]}")
    assert not failures, "\n".join(failures)
    assert httpx.get(f"{server}/healthz").status_code == 200
    assert httpx.get(f"{server}/readyz").status_code == 200


def test_a_chunked_body_over_the_cap_is_refused_before_it_is_all_sent(server: str) -> None:
    """2 MiB cap (conftest); we offer 256 MiB in chunks with no Content-Length and stop once answered."""
    address = urlsplit(server)
    chunk = b"\x00" * 65536
    sent = 0
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        head = f"POST /v1/denoise HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: image/png\r\n"
        sock.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
        answered = False
        while sent < 256 * 1024 * 1024:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                answered = True
                break
            try:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                answered = True  # the server hung up on us: its answer is waiting in our receive buffer
                break
            sent += len(chunk)
        assert answered
        reply = b""
        while b"\r\n\r\n" not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    # The cap plus what socket buffers hold, far below what we were ready to send.
    assert sent < 64 * 1024 * 1024, sent
    assert httpx.get(f"{server}/readyz").status_code == 200


# -- graceful shutdown ---------------------------------------------------------------------------------


@pytest.fixture
def slow_batching_server(checkpoints_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A uvicorn process whose batches wait 3 s for company, so a request stays in flight that long.
    No default models (nothing warms up, so start-up stays fast); requests name their model."""
    port = free_port()
    env = {
        **os.environ,
        "AE_CHECKPOINTS_DIR": str(checkpoints_dir),
        "AE_DEVICE": "cpu",
        "AE_DEFAULT_MODELS": json.dumps(dict.fromkeys(DEFAULT_MODELS, "absent")),
        "AE_TORCH_THREADS": "1",
        "AE_BATCH_MAX_DELAY_MS": "3000",
        "AE_BATCH_ADAPTIVE_DELAY": "false",  # even a lone request waits for company (the default runs it at once)
        "AE_SHUTDOWN_DRAIN_S": str(DRAIN_S),
    }
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield process, base_url
    finally:
        stop_server(process)


def queued_images(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("ae_batcher_queue_depth{")
    )


def test_sigterm_drains_finishes_requests_in_flight_then_refuses_new_ones_and_exits_0(
    slow_batching_server: tuple[subprocess.Popen[str], str],
) -> None:
    process, base_url = slow_batching_server
    results: list[httpx.Response] = []
    in_flight = threading.Thread(
        target=lambda: results.append(
            httpx.post(f"{base_url}/v1/vae/sample", json={"n": 2, "model": "tiny-vae-2d"}, timeout=60)
        )
    )
    in_flight.start()
    deadline = time.monotonic() + 30
    while queued_images(base_url) < 1:  # the request is in the batcher's queue: in flight
        assert time.monotonic() < deadline, "the request never reached the batcher"
        time.sleep(0.05)

    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    # During the drain (DRAIN_S) new connections are still served, but readiness says 503 and answers close.
    # Polled: until the server has handled the signal, readiness is still 200.
    while (during := httpx.get(f"{base_url}/readyz", timeout=10)).status_code == 200:
        assert time.monotonic() - signalled < DRAIN_S, "readiness never said 503 during the drain"
        time.sleep(0.02)
    assert during.status_code == 503 and during.headers["connection"] == "close"
    refused = False
    while not refused and time.monotonic() - signalled < 30:
        try:
            httpx.get(f"{base_url}/healthz", timeout=1)  # a new connection each time
        except httpx.TransportError:
            refused = True
        time.sleep(0.05)
    in_flight.join(timeout=60)

    assert refused, "new connections were still accepted long after the drain"
    assert in_flight.is_alive() is False and len(results) == 1
    assert results[0].status_code == 200, results[0].text  # the request read before the signal was answered
    assert len(results[0].json()["data"]) == 2
    assert process.wait(timeout=30) == 0  # the drain ends in a clean exit, not "killed by SIGTERM"
