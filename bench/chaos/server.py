"""The chaos run's server: a real `ae-serve` process (one or two workers) on a free loopback port, and what
is read of it from outside: its open file descriptors, its memory, its workers, its log's times."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.chaos.clients import ADMIN_KEY, HOST
from bench.harness import free_port, stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]
# -- the server ----------------------------------------------------------------------------------------


@dataclass
class Setup:
    checkpoints_dir: Path
    default_models: dict[str, str] | None
    model: str  # the denoising model the load uses and the swap replaces
    work_dir: Path


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_lines(self) -> list[dict[str, Any]]:
        """The service's JSON log lines (uvicorn's own lines are plain text and skipped)."""
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with suppress(ValueError):
                    lines.append(json.loads(line))
        return lines


@contextmanager
def running(setup: Setup, name: str, workers: int = 1, env: dict[str, str] | None = None) -> Iterator[Server]:
    """`python -m app.process.cli` (ae-serve) on a free loopback port, ready; stopped afterwards as an operator
    would (SIGTERM to its process group, SIGKILL only if it is still there after a drain's time)."""
    port = free_port()
    variables = {
        "AE_CHECKPOINTS_DIR": str(setup.checkpoints_dir),
        "AE_DEVICE": "cpu",
        "AE_TORCH_THREADS": "1",
        "AE_ADMIN_API_KEY": ADMIN_KEY,
        "AE_LOG_LEVEL": "info",
        **({"AE_DEFAULT_MODELS": json.dumps(setup.default_models)} if setup.default_models else {}),
        **(env or {}),
    }
    command = [sys.executable, "-m", "app.process.cli", "--host", HOST, "--port", str(port), "--workers", str(workers)]
    log = setup.work_dir / f"{name}.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=os.environ | variables,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it reaches every worker
        )
    server = Server(process, port, log)
    try:
        wait_ready(server, workers)
        yield server
    finally:
        stop_process(process, timeout_s=30)


def wait_ready(server: Server, workers: int, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log.read_text()[-3000:]}")
        started = sum(1 for line in server.log_lines() if line.get("message", "").startswith("service started"))
        try:
            if started >= workers and httpx.get(f"http://{HOST}:{server.port}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready within {timeout_s} s:\n{server.log.read_text()[-3000:]}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker_pids(parent: int) -> list[int]:
    """The uvicorn workers of a supervisor: its children that run multiprocessing's spawn entry point
    (not its resource tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    workers = []
    for child in children:
        with suppress(OSError):
            command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"spawn_main" in command:
                workers.append(int(child))
    return workers


def log_time(line: dict[str, Any]) -> float:
    """A JSON log line's time as seconds since the epoch."""
    return datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
