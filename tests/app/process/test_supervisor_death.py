"""Workers die with their supervisor: `kill -9` of `ae-serve --workers 2` leaves no worker behind.

The supervisor cannot pass a SIGKILL on; each worker watches its parent (app.process.server.SupervisorWatch) and
stops once it is gone. Without that, both workers keep running, holding the port and ~400 MiB each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import REPO_ROOT, free_port
from process_leaks import alive  # tests/process_leaks.py, on the path from tests/conftest.py
from tiny_checkpoints import DEFAULT_MODELS

WORKERS = 2
ORPHANS_GONE_WITHIN_S = 5.0  # the bound: noticed within a second, a short drain, then exit


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def started_workers(log: Path) -> int:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]
    return sum(1 for line in lines if json.loads(line).get("message", "").startswith("service started"))


def test_kill_9_of_the_supervisor_stops_every_worker(checkpoints_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "AE_CHECKPOINTS_DIR": str(checkpoints_dir),
        "AE_DEVICE": "cpu",
        "AE_DEFAULT_MODELS": json.dumps(DEFAULT_MODELS),
        "AE_TORCH_THREADS": "1",
        "AE_LOG_LEVEL": "info",
    }
    log = tmp_path / "server.log"
    command = [
        sys.executable,
        "-m",
        "app.process.cli",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(WORKERS),
    ]
    with log.open("w") as log_file:
        supervisor = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 180
        while started_workers(log) < WORKERS or not ready(port):
            assert supervisor.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the workers did not start within 180 s"
            time.sleep(0.2)
        workers = children(supervisor.pid)
        assert len(workers) >= WORKERS, workers  # multiprocessing may add its resource tracker

        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait()
        gone_by = time.monotonic() + ORPHANS_GONE_WITHIN_S
        while any(alive(pid) for pid in workers) and time.monotonic() < gone_by:
            time.sleep(0.1)
        left = sorted(pid for pid in workers if alive(pid))
        assert not left, f"workers {left} outlived their supervisor:\n{log.read_text()[-3000:]}"
        assert "the supervisor (pid" in log.read_text()  # they stopped because they noticed, and said so
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
