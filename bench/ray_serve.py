"""The Ray Serve application (ae_ray) against the plain service, measured in one run on this machine.

    PYTHONPATH=. python -m bench.ray_serve --duration 6 --out docs/scaling-run.json     # needs the `ray` extra

Each configuration is loaded by bench.loadgen (closed loop) with two workloads on the shipped mnist-denoise:
1-image requests from 16 connections (requests/s and p99: the per-request cost of Ray's proxy and the handle
hop) and 64-image requests from 4 connections (images/s: what batching inside a replica keeps). Measured in
this order: the plain service, Ray with 1 replica (the project's batcher), Ray with 1 replica (@serve.batch),
Ray with 2 replicas, the plain service again (the machine drifts: both plain runs are reported).

Every server runs torch with one thread per process (AE_TORCH_THREADS=1) and Ray gets the machine's 2 CPUs,
so the comparison is process for process; the generator shares the cores (nothing is pinned: Ray's replicas
are processes of its own). Report ratios measured in the same run, not absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench.harness import free_port, stop_process

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = {
    "1-image": {"images_per_request": 1, "concurrency": 16},
    "64-image": {"images_per_request": 64, "concurrency": 4},
}


def write_pngs(folder: Path, count: int = 256) -> None:
    """Seeded noise pictures, 28x28 grayscale: the model's cost does not depend on what the digits show."""
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = (rng.random((28, 28)) * 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"image{index:04d}.png")


def service_env(checkpoints: Path) -> dict[str, str]:
    return {
        "AE_CHECKPOINTS_DIR": str(checkpoints),
        "AE_DEVICE": "cpu",
        "AE_TORCH_THREADS": "1",
        "AE_LOG_LEVEL": "warning",
    }


def wait_ready(url: str, timeout_s: float = 180) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s} s")


@contextmanager
def plain_server(env: dict[str, str], log: Path) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log"]
    with log.open("w") as log_file:
        process = subprocess.Popen(command, env=os.environ | env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            wait_ready(f"http://127.0.0.1:{port}")
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process(process)


def measure(url: str, images: Path, args: argparse.Namespace) -> dict[str, Any]:
    port = url.rsplit(":", 1)[1]
    results = {}
    for name, workload in WORKLOADS.items():
        command = [sys.executable, "-m", "bench.loadgen", "--port", port, "--path", "/v1/denoise"]
        command += ["--images-dir", str(images), "--duration", str(args.duration), "--warmup", str(args.warmup)]
        command += ["--images-per-request", str(workload["images_per_request"])]
        command += ["--concurrency", str(workload["concurrency"])]
        report = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        latency = report["latency_ok_s"]
        results[name] = {
            "requests_per_s": report["requests_per_s"],
            "images_per_s": report["requests_per_s"] * workload["images_per_request"],
            "p50_ms": None if latency["p50"] is None else latency["p50"] * 1000,
            "p99_ms": None if latency["p99"] is None else latency["p99"] * 1000,
            "statuses": report["statuses"],
            "errors": report["errors"],
        }
        print(f"  {name}: {results[name]}", file=sys.stderr)
    return results


def ray_configurations(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    base = {"cpus_per_replica": 0.5, "gateway_cpus": 0.5}
    return [
        ("ray, 1 replica, project batcher", {**base, "num_replicas": 1, "batching": "project"}),
        ("ray, 1 replica, @serve.batch", {**base, "num_replicas": 1, "batching": "serve"}),
        ("ray, 2 replicas, project batcher", {**base, "num_replicas": 2, "batching": "project"}),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=Path, default=REPO_ROOT / "checkpoints")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--out", type=Path, help="write the JSON report here (Ray's own messages go to stdout too)")
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    from ae_ray.application import build_app

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        # The MNIST checkpoints only: one model deployment ("mnist"), so that 2 replicas of it fit in 2 CPUs.
        checkpoints = Path(scratch) / "checkpoints"
        for folder in sorted(args.checkpoints.glob("mnist-*")):
            shutil.copytree(folder, checkpoints / folder.name)
        env = service_env(checkpoints)
        images = Path(scratch) / "images"
        images.mkdir()
        write_pngs(images)
        with plain_server(env, Path(scratch) / "plain.log") as plain_url:
            print("plain service", file=sys.stderr)
            runs.append({"name": "plain (before)", "results": measure(plain_url, images, args)})
            started = time.monotonic()
            ray.init(
                num_cpus=2,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                runtime_env={"env_vars": env},
                log_to_driver=False,
            )
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            os.environ.update(env)  # the builder reads the settings here, the replicas from the runtime_env
            for name, options in ray_configurations(args):
                print(name, file=sys.stderr)
                serve.run(build_app(options), name="ae", route_prefix="/")
                ready_s = time.monotonic() - started
                runs.append(
                    {
                        "name": name,
                        "options": options,
                        "ready_s": ready_s,
                        "results": measure(f"http://127.0.0.1:{port}", images, args),
                    }
                )
                serve.delete("ae")
                started = time.monotonic()
            serve.shutdown()
            ray.shutdown()
            print("plain service again", file=sys.stderr)
            runs.append({"name": "plain (after)", "results": measure(plain_url, images, args)})
    report = json.dumps({"machine": machine(), "duration_s": args.duration, "runs": runs}, indent=1)
    if args.out is not None:
        args.out.write_text(report + "\n")
    else:
        print(report)


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    return f"{os.cpu_count()} cores, {model}, load average {os.getloadavg()[0]:.1f} at the end"


if __name__ == "__main__":
    main()
