"""What the HTTP benchmarks share (bench.run, bench.overload, bench.oip, bench.soak, bench.chaos, ...): the
cores servers and load generators are pinned to, the machine described, test digits as PNG files, servers
started and stopped, loadgen runs, and the service's /metrics read before and after a run."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import torch
from PIL import Image

from bench.loadgen import BOUNDARY, multipart_body
from models.data.corruptions import gaussian_noise
from models.data.mnist import load_mnist
from models.runtime.machine import processor_name

SERVER_CORE, GENERATOR_CORE = "0", "1"
CONCURRENCIES = (1, 8, 32, 128)
BATCH_REQUEST_IMAGES = 64
BATCH_REQUEST_CONCURRENCIES = (1, 4)
MODEL = "mnist-denoise"
NAIVE_BATCHED = "naive + Batcher"
NAIVE_PLAN = "naive + plan"
LITSERVE = "LitServe"
TIMEOUT_S = 30.0  # AE_BATCH_TIMEOUT_S's default
HANG_S = 5.0  # under overload, an answer later than this counts as hung, whatever its status


@dataclass
class Run:
    server: str
    workload: str
    result: dict[str, Any]
    mean_batch_size: float | None = None
    stage_means_s: dict[str, float | None] | None = None  # mean seconds per request (model: per pass)
    model_busy_share: float | None = None  # model seconds / wall seconds over the run (warm-up included)


def machine_description(device: str) -> dict[str, str]:
    cpu = processor_name()
    load = Path("/proc/loadavg").read_text().split()[:3]
    try:
        import httptools  # noqa: F401  # uvicorn uses it when installed, else the pure-Python h11

        http = "httptools"
    except ImportError:
        http = "h11 (pure Python; httptools is not installed)"
    try:
        import uvloop  # noqa: F401  # uvicorn's event loop when installed, else asyncio's own

        loop = "uvloop"
    except ImportError:
        loop = "asyncio (uvloop is not installed)"
    described = {
        "cpu": f"{os.cpu_count()} x {cpu}",
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else "none used",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "uvicorn http": http,
        "uvicorn event loop": loop,
        "load average before the run": " ".join(load),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    return described


def write_pngs(data_dir: Path, folder: Path, count: int = 256) -> list[Path]:
    """Noisy MNIST test digits as 28x28 grayscale PNG files (sigma 0.3, fixed seed)."""
    test = load_mnist(data_dir, "test")
    noisy = gaussian_noise(test.images[:count], sigma=0.3, seed=0)  # (count, 1, 28, 28)
    paths = []
    for index, image in enumerate(noisy):
        path = folder / f"digit{index:04d}.png"
        Image.fromarray((image[0] * 255).round().to(torch.uint8).numpy(), mode="L").save(path)
        paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server(
    app: str, env: dict[str, str], log: Path, probe_png: bytes, ready_path: str, module: list[str] | None = None
) -> Iterator[int]:
    """Start `uvicorn app` (or `python -m <module...> --port N`) pinned to the server core; yield its port
    once `ready_path` answers 200."""
    port = free_port()
    if module is not None:
        command = ["taskset", "-c", SERVER_CORE, sys.executable, "-m", *module, "--port", str(port)]
    else:
        command = ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "uvicorn", app]
        command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    with log.open("w") as log_file:
        # Its own session, so that stopping it also stops the worker processes a server may start (LitServe).
        process = subprocess.Popen(
            command, env=os.environ | env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_until_ready(process, port, probe_png, ready_path, log)
            yield port
        finally:
            stop_process(process, timeout_s=15)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    """Ask a server to shut down gracefully; kill it if it is still there after `timeout_s`. A server started
    in a session of its own is stopped with its whole process group (workers it started included)."""
    own_group = process.poll() is None and os.getpgid(process.pid) == process.pid

    def signal_server(signal_number: int) -> None:
        if own_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal_number)
        else:
            process.send_signal(signal_number)

    signal_server(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        signal_server(signal.SIGKILL)
        process.wait()
    if own_group:  # workers that outlived their parent
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def wait_until_ready(process: subprocess.Popen[bytes], port: int, png: bytes, path: str, log: Path) -> None:
    body = multipart_body([png])
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log}:\n{log.read_text()[-3000:]}")
        try:
            response = httpx.post(f"http://127.0.0.1:{port}{path}", content=body, headers=headers, timeout=10)
            if response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server on port {port} not ready after 120 s; see {log}")


def load(port: int, args: argparse.Namespace, images_dir: Path | None, path: str, **options: Any) -> dict[str, Any]:
    """One loadgen run pinned to the generator core; -> its JSON report."""
    command = ["taskset", "-c", GENERATOR_CORE, sys.executable, "-m", "bench.loadgen", "--port", str(port)]
    command += ["--path", path, "--duration", str(args.duration), "--warmup", str(args.warmup)]
    if images_dir is not None:
        command += ["--images-dir", str(images_dir)]
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    finished = subprocess.run(command, capture_output=True, text=True, check=True, timeout=args.duration + 120)
    return dict(json.loads(finished.stdout))


STAGES = ("decode", "queue", "model", "encode")


@dataclass
class Scrape:
    """Sums and counts of the service's histograms at one moment, summed over models and routes."""

    at: float
    sums: dict[str, float]  # "batch_size" or a stage name -> sum
    counts: dict[str, float]


def scrape(port: int) -> Scrape | None:
    """Read `ae_batch_size` and `ae_stage_duration_seconds` from /metrics (None if there are none)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    pattern = r"^(ae_batch_size|ae_stage_duration_seconds)_(sum|count)(\{[^}]*\})? ([0-9.eE+-]+)$"
    for line in text.splitlines():
        match = re.match(pattern, line)
        if not match:
            continue
        metric, kind, labels, value = match.groups()
        key = "batch_size"
        if metric == "ae_stage_duration_seconds":
            stage = re.search(r'stage="([^"]+)"', labels or "")
            key = stage.group(1) if stage else "unknown"
        target = sums if kind == "sum" else counts
        target[key] = target.get(key, 0.0) + float(value)
    return Scrape(time.perf_counter(), sums, counts) if counts else None


def measured(port: int, run: Run, before: Scrape | None) -> Run:
    """Fill the run's batch size and per-stage means from the metrics' change during the run."""
    after = scrape(port)
    if before is None or after is None:
        return run

    def mean(key: str) -> float | None:
        count = after.counts.get(key, 0.0) - before.counts.get(key, 0.0)
        return (after.sums.get(key, 0.0) - before.sums.get(key, 0.0)) / count if count else None

    run.mean_batch_size = mean("batch_size")
    run.stage_means_s = {stage: mean(stage) for stage in STAGES}
    model_seconds = after.sums.get("model", 0.0) - before.sums.get("model", 0.0)
    run.model_busy_share = model_seconds / (after.at - before.at)
    return run


def service_env(args: argparse.Namespace) -> dict[str, str]:
    return {
        "AE_CHECKPOINTS_DIR": str(args.checkpoints),
        "AE_TORCH_THREADS": "1",
        "AE_DEVICE": args.device,
        "AE_PRECISION": args.precision,
    }
