"""A real `ae-serve` (python -m app.process.cli) with HTTP and gRPC on free ports, for the Open Inference
Protocol's tests (test_oip*.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from conftest import REPO_ROOT, free_port

SHIPPED = REPO_ROOT / "checkpoints"


@dataclass
class Server:
    http_url: str  # host:port, as tritonclient takes it
    grpc_url: str
    process: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://{self.http_url}"


@contextmanager
def running_ae_serve(root: Path, models: list[str], env: dict[str, str]) -> Iterator[Server]:
    """ae-serve with --grpc-port on a copy of the shipped checkpoints `models` (in `root`), AE_* from `env`."""
    for name in models:
        shutil.copytree(SHIPPED / name, root / name)
    http_port, grpc_port = free_port(), free_port()
    settings = {**os.environ, "AE_CHECKPOINTS_DIR": str(root), "AE_DEVICE": "cpu", "AE_TORCH_THREADS": "1", **env}
    command = [sys.executable, "-m", "app.process.cli", "--host", "127.0.0.1", "--port", str(http_port)]
    command += ["--grpc-port", str(grpc_port)]
    log_path = root.parent / "ae-serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=settings, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 180
            while True:
                assert process.poll() is None, f"ae-serve exited: {log_path.read_text()[-2000:]}"
                try:
                    if httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "ae-serve did not become ready within 180 s"
                time.sleep(0.3)
            yield Server(f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
