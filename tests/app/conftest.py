"""Fixtures of the service tests: tiny checkpoints trained once per session, the app in-process, and
the app as a real uvicorn process on a free port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from tiny_checkpoints import DEFAULT_MODELS, build_checkpoints

from app.main import create_app
from app.settings import DefaultModels, Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def checkpoints_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("checkpoints")
    build_checkpoints(root)
    return root


def make_settings(checkpoints_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "checkpoints_dir": checkpoints_dir,
        "device": "cpu",
        "default_models": DefaultModels(**DEFAULT_MODELS),
        "preload": "defaults",
        "batch_max_delay_ms": 1.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def settings(checkpoints_dir: Path) -> Settings:
    return make_settings(checkpoints_dir)


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[TestClient]:
    """The app in-process, started (lifespan run: models loaded and warmed up) once per session."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(
    checkpoints_dir: Path, default_models: dict[str, str], extra_env: dict[str, str] | None = None
) -> Iterator[str]:
    """`python -m uvicorn app.main:app` on a free port, configured through AE_* variables; its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "AE_CHECKPOINTS_DIR": str(checkpoints_dir),
        "AE_DEVICE": "cpu",
        "AE_DEFAULT_MODELS": json.dumps(default_models),
        "AE_TORCH_THREADS": "1",
        "AE_MAX_BODY_BYTES": str(2 * 1024 * 1024),
        **(extra_env or {}),
    }
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    # The keep-alive that ae-serve uses (20 s), not plain uvicorn's 5 s: that equals httpx's pool expiry, and a
    # client would now and then reuse a connection at the instant the server closes it.
    command += ["--timeout-keep-alive", str(int(Settings.model_fields["keep_alive_s"].default))]
    # The log goes to a file: an unread pipe fills after a few hundred request lines and blocks the server.
    log_path = checkpoints_dir.parent / f"uvicorn-{port}.log"
    log = log_path.open("w")
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {process.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not become ready within 120 s")
            time.sleep(0.2)
        yield base_url
    finally:
        stop_server(process)
        log.close()


def stop_server(process: subprocess.Popen[str] | subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    """SIGTERM (the server drains and exits), then SIGKILL only if it is still there after `timeout_s`."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def server(checkpoints_dir: Path) -> Iterator[str]:
    """The service on the tiny checkpoints as a real uvicorn process; its base URL."""
    with running_server(checkpoints_dir, DEFAULT_MODELS) as base_url:
        yield base_url


@pytest.fixture
def make_client(checkpoints_dir: Path) -> Iterator[object]:
    """A factory of started in-process clients with other settings (limits, defaults); closed after the test."""
    clients: list[TestClient] = []

    def factory(**overrides: object) -> TestClient:
        test_client = TestClient(create_app(make_settings(checkpoints_dir, **overrides)), raise_server_exceptions=False)
        test_client.__enter__()
        clients.append(test_client)
        return test_client

    yield factory
    for test_client in clients:
        test_client.__exit__(None, None, None)
