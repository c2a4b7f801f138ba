"""Benchmark the service against the in-process limit and a naive server, in one run on one machine.

    python -m bench.run --data-dir /work/shared/datasets/mnist --out docs/benchmarks.md

1. the limit: in-process images/s of every MNIST checkpoint at batch sizes 1, 8, 64, 256, eager and
   with the service's execution plan (models.runtime.execution), on one core (the server's share below) and
   on all cores; and the photo denoiser bsd-denoise-sigma25 through its tiled path on one core;
2. the naive server (`bench/naive_server.py`, one forward pass per request, eager NCHW float32 as a
   user writes it first), the same with the service's execution plan ("naive + plan": what the plan
   buys without the serving), the same route through the Batcher, and LitServe
   (`bench/litserve_server.py`: max_batch_size=32, batch_timeout=5 ms, same PNG codec), and
3. the service (`ae-serve`, as users run it), each started as its own process pinned with `taskset` to
   core 0, loaded by `bench.loadgen` pinned to core 1: single-image requests to `/v1/denoise`
   (model `mnist-denoise`, multipart PNG 28x28 noisy MNIST test digits) at 1, 8, 32, 128 concurrent
   clients; for the service also requests of 64 images, open-loop floods at 2x, 4x and 10x its best
   closed-loop rate (`bench.overload`), and the CPU time of a served and of a refused answer;
4. ratios and the targets of issue 10.

On a GPU machine, `--device cuda` runs the same comparison with the models on CUDA: the service and
"naive + plan" then run float16/bfloat16 where the cards' quality guard allows it (or `--precision`)
and compiled (AE_COMPILE=auto compiles on CUDA).

The report replaces the part of `--out` between the bench markers and keeps the rest (the analysis).
Takes about 10 minutes on 2 cores (the photo timings a few of them; --no-photos skips them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.harness import (
    BATCH_REQUEST_CONCURRENCIES,
    BATCH_REQUEST_IMAGES,
    CONCURRENCIES,
    LITSERVE,
    MODEL,
    NAIVE_BATCHED,
    NAIVE_PLAN,
    SERVER_CORE,
    Run,
    load,
    machine_description,
    measured,
    scrape,
    server,
    service_env,
    write_pngs,
)
from bench.limit import LimitResult
from bench.overload import answer_costs, bench_overload, flood_target_lines
from bench.run_report import report, write_report


def in_process(
    args: argparse.Namespace, pin: list[str], threads: int, pngs: Path | None = None, photos: bool = False
) -> dict[str, Any]:
    """Run bench.limit in its own process (clean thread pool, pinned by `pin`); -> its JSON report."""
    command = [*pin, sys.executable, "-m", "bench.limit", "--checkpoints", str(args.checkpoints)]
    command += ["--device", args.device, "--threads", str(threads), "--seconds", str(args.limit_seconds)]
    command += ["--precision", args.precision]
    if pngs is not None:
        command += ["--pngs", str(pngs)]
    if photos:
        command += ["--photos"]
    finished = subprocess.run(command, capture_output=True, text=True, check=True, timeout=1200)
    return dict(json.loads(finished.stdout))


def limit_results(report: dict[str, Any]) -> list[LimitResult]:
    return [
        LimitResult(
            model=item["model"],
            tasks=item["tasks"],
            input_shape=tuple(item["input_shape"]),
            images_per_s={int(size): rate for size, rate in item["images_per_s"].items()},
            planned_images_per_s={int(size): rate for size, rate in item["planned_images_per_s"].items()},
            plan=item["plan"],
        )
        for item in report["limits"]
    ]


def bench_naive(
    args: argparse.Namespace, images_dir: Path, png: bytes, logs: Path, batched: bool = False, plan: bool = False
) -> list[Run]:
    """The naive server (and the trivial endpoint); with `batched` the same route through the Batcher; with
    `plan` one pass per request still, with the service's execution plan."""
    env = {"AE_BENCH_CHECKPOINT": str(args.checkpoints / MODEL), "AE_BENCH_TORCH_THREADS": "1"}
    env |= {"AE_BENCH_DEVICE": args.device, "AE_BENCH_BATCHED": "1" if batched else "0"}
    env |= {"AE_BENCH_PLAN": "1" if plan else "0", "AE_BENCH_PRECISION": args.precision}
    name = NAIVE_BATCHED if batched else NAIVE_PLAN if plan else "naive"
    runs = []
    with server("bench.naive_server:app", env, logs / f"{name}.log", png, "/v1/denoise") as port:
        if not batched and not plan:
            trivial = load(port, args, None, "/ping", concurrency=32)
            runs.append(Run(name, "GET /ping (trivial), 32 clients", trivial))
        for clients in CONCURRENCIES:
            result = load(port, args, images_dir, "/v1/denoise", concurrency=clients)
            runs.append(Run(name, f"1 image, {clients} clients", result))
    return runs


def bench_litserve(args: argparse.Namespace, images_dir: Path, png: bytes, logs: Path) -> list[Run]:
    """LitServe serving the same checkpoint (bench/litserve_server.py), pinned like the others."""
    module = ["bench.litserve_server", "--checkpoint", str(args.checkpoints / MODEL), "--device", args.device]
    runs = []
    with server("", {}, logs / "litserve.log", png, "/v1/denoise", module=[*module, "--threads", "1"]) as port:
        for clients in CONCURRENCIES:
            result = load(port, args, images_dir, "/v1/denoise", concurrency=clients)
            runs.append(Run(LITSERVE, f"1 image, {clients} clients", result))
    return runs


@contextmanager
def service(
    args: argparse.Namespace,
    images_dir: Path,
    png: bytes,
    logs: Path,
    name: str,
    env: dict[str, str],
) -> Iterator[Callable[..., Run]]:
    """Start the service; yield measure(workload, **loadgen options) -> Run with its /metrics figures."""
    with server("", env, logs / f"{name}.log", png, "/v1/denoise", module=["app.process.cli"]) as port:
        path = f"/v1/denoise?model={MODEL}"

        def measure(workload: str, **loadgen_options: Any) -> Run:
            before = scrape(port)
            result = load(port, args, images_dir, path, **loadgen_options)
            return measured(port, Run(name, workload, result), before)

        yield measure


def bench_service(args: argparse.Namespace, images_dir: Path, png: bytes, logs: Path) -> list[Run]:
    """The service as it ships (default settings): every closed-loop workload (the floods: bench.overload)."""
    runs: list[Run] = []
    with service(args, images_dir, png, logs, "service", service_env(args)) as measure:
        for clients in CONCURRENCIES:
            runs.append(measure(f"1 image, {clients} clients", concurrency=clients))
        for clients in BATCH_REQUEST_CONCURRENCIES:
            workload = f"{BATCH_REQUEST_IMAGES} images, {clients} clients"
            runs.append(measure(workload, concurrency=clients, images_per_request=BATCH_REQUEST_IMAGES))
    return runs


def bench_service_other_delays(args: argparse.Namespace, images_dir: Path, png: bytes, logs: Path) -> list[Run]:
    """For comparison: the service with max_delay_ms=0 (a pass starts as soon as the model is free), and
    with the adaptive delay off (every pass waits up to max_delay_ms for company, the lone client too)."""
    runs: list[Run] = []
    variants = {
        "service, max_delay_ms=0": {"AE_BATCH_MAX_DELAY_MS": "0"},
        "service, fixed 2 ms delay": {"AE_BATCH_ADAPTIVE_DELAY": "false"},
    }
    for name, settings in variants.items():
        with service(args, images_dir, png, logs, name, service_env(args) | settings) as measure:
            for clients in (1, 32):
                runs.append(measure(f"1 image, {clients} clients", concurrency=clients))
    return runs


# -- the report ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="MNIST IDX files (the test split is used)")
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--device", default="cpu", help="cpu or cuda (model and service device)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per HTTP run")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per HTTP run")
    parser.add_argument("--limit-seconds", type=float, default=0.4, help="timing per in-process measurement")
    parser.add_argument(
        "--precision", default="auto", help="AE_PRECISION of the service and the planned measurements (default auto)"
    )
    parser.add_argument("--no-photos", action="store_true", help="skip the photo denoiser's timings (minutes on CPU)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python -m bench.run " + " ".join(sys.argv[1:] if argv is None else argv)
    args.checkpoints = args.checkpoints.resolve()
    machine = machine_description(args.device)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ae-bench-") as scratch:
        images_dir = Path(scratch) / "pngs"
        images_dir.mkdir()
        pngs = write_pngs(args.data_dir, images_dir)
        logs = Path(scratch)

        print("1/3 in-process limit", flush=True)
        pin = ["taskset", "-c", SERVER_CORE]
        one_core_report = in_process(args, pin, threads=1, pngs=images_dir, photos=not args.no_photos)
        all_cores_report = in_process(args, [], threads=os.cpu_count() or 1)
        one_core = limit_results(one_core_report)
        all_cores = limit_results(all_cores_report)
        codec_s = float(one_core_report["codec_seconds_per_image"])
        batcher_rates = {float(k): float(v) for k, v in one_core_report["batcher_requests_per_s"].items()}
        photos = dict(one_core_report.get("photos", {}))

        probe = pngs[0].read_bytes()
        print("2/3 naive server and LitServe", flush=True)
        runs = bench_naive(args, images_dir, probe, logs)
        runs += bench_naive(args, images_dir, probe, logs, plan=True)
        runs += bench_naive(args, images_dir, probe, logs, batched=True)
        runs += bench_litserve(args, images_dir, probe, logs)
        print("3/3 service", flush=True)
        runs += bench_service(args, images_dir, probe, logs)
        runs += bench_service_other_delays(args, images_dir, probe, logs)
        print("4/4 overload", flush=True)
        floods = bench_overload(args, images_dir, probe, logs)
        runs += floods
        flood_lines = flood_target_lines(floods, answer_costs(args, images_dir, probe, logs))

    generated = report(machine, command, one_core, all_cores, codec_s, batcher_rates, runs, args, photos, flood_lines)
    write_report(args.out, generated)
    print(generated)
    print(f"done in {time.monotonic() - started:.0f} s; wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
