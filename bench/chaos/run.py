"""Chaos run: faults in a server's life, against real `ae-serve` processes (uvicorn) on the loopback.

    python -m bench.chaos                       # the full run of docs/reliability.md (several minutes)
    python -m bench.chaos --short               # the version tests/app/process/test_chaos_short.py runs
    python -m bench.chaos --output run.json     # also write the figures as JSON

Every fault is driven by clients with bounded loops (a number of requests or a deadline), written on
raw sockets so that each request's fate is known exactly:

- **answered**, by status: a complete answer came back;
- **lost**: the request was written and the connection closed (or reset) without a complete answer;
- **refused**: the connection could not even be opened (nothing was sent; after a shutdown, say).

Faults, in order, on one single-worker server (admin key set), then on a two-worker one:

1. `slow-headers`: N connections send request headers one line a second; each must be closed
   (with a 408) within the header deadline; health probes every 100 ms must stay fast; the server's
   open file descriptors (/proc/PID/fd) are sampled and must return to the baseline afterwards.
2. `swap`: requests flow for one model while its checkpoint is replaced through
   `POST /v1/models/{name}/reload` (new weights: 0 failures, the new sha256 serves), then replaced by a
   corrupt file (refused with 409, the old weights keep serving).
3. `admission`: requests whose query names a new made-up model each time while the body names the
   real one: refusals show the per-model bound holds; the server's memory is sampled as they flow.
4. `disconnect`: clients that close the connection in the middle of their body: 499 in the access
   log and metrics, no stack trace.
5. `drain`: SIGTERM while C clients are sending: readiness 503 at once, 0 lost, exit status 0, time
   to exit.
6. `worker-kill` (two workers): `kill -9` of one worker under load: what failed, how long until the
   replacement is ready, and that it took no request before its warm-up was done.
7. `keep-alive-race` (full run only): why a request can meet a closed connection with no shutdown at
   all: a client's pool expiry equal to the server's keep-alive timeout (httpx's and uvicorn's
   defaults are both 5 s).

The shipped checkpoints serve by default; `--checkpoints-dir` and `--default-models` point it at others.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.chaos.connection_faults import admission, disconnects, keep_alive_race, slow_headers
from bench.chaos.lifecycle_faults import drain, swap, worker_kill
from bench.chaos.server import REPO_ROOT, Setup, open_fds, rss_mib, running
from bench.harness import machine_description

# -- the run ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    slow_connections: int
    slow_per_second: int
    header_timeout_s: float
    swap_clients: int
    swap_phase_s: float
    admission_requests: int
    admission_clients: int
    disconnects: int
    drain_clients: int
    drain_warm_s: float
    drain_s: float
    kill_clients: int
    kill_warm_s: float
    kill_after_s: float
    keep_alive_race_tries: int


FULL = Sizes(3000, 1000, 10.0, 8, 3.0, 100_000, 128, 20, 32, 3.0, 5.0, 32, 3.0, 5.0, 64)
SHORT = Sizes(200, 400, 2.0, 4, 1.0, 1500, 96, 5, 16, 1.5, 2.0, 8, 1.5, 2.0, 0)


async def run_faults(setup: Setup, sizes: Sizes, only: set[str] | None, same_name: bool = False) -> dict[str, Any]:
    results: dict[str, Any] = {}

    def wanted(name: str) -> bool:
        return only is None or name in only

    single = {
        "AE_HEADER_TIMEOUT_S": str(sizes.header_timeout_s),
        "AE_SHUTDOWN_DRAIN_S": str(sizes.drain_s),
        # Admission.s queue budget would refuse part of the load on a busy machine: these faults are about
        # what is lost, not about overload (docs/benchmarks.md), so the budget is the deadline (30 s).
        "AE_QUEUE_BUDGET_MS": "30000",
    }
    if any(wanted(n) for n in ("slow-headers", "swap", "admission", "disconnect", "drain")):
        with running(setup, "single-worker", env=single) as server:
            results["start"] = {"rss_mib_ready": round(rss_mib(server.pid), 1), "fds_ready": open_fds(server.pid)}
            if wanted("slow-headers"):
                results["slow-headers"] = await slow_headers(
                    server, sizes.slow_connections, sizes.header_timeout_s, sizes.slow_per_second
                )
            if wanted("swap"):
                results["swap"] = await swap(server, setup, sizes.swap_clients, sizes.swap_phase_s)
            if wanted("admission"):
                results["admission"] = await admission(
                    server, setup, sizes.admission_requests, sizes.admission_clients, not same_name
                )
            if wanted("disconnect"):
                results["disconnect"] = await disconnects(server, sizes.disconnects)
            if wanted("drain"):
                results["drain"] = await drain(server, setup, sizes.drain_clients, sizes.drain_warm_s, sizes.drain_s)
    if wanted("worker-kill"):
        with running(setup, "two-workers", workers=2, env={"AE_QUEUE_BUDGET_MS": "30000"}) as server:
            results["worker-kill"] = await worker_kill(
                server, setup, sizes.kill_clients, sizes.kill_warm_s, sizes.kill_after_s
            )
    if sizes.keep_alive_race_tries and wanted("keep-alive-race"):
        races = []
        for keep_alive_s in (5.0, 20.0):  # uvicorn's default; this service's default
            with running(setup, f"keep-alive-{keep_alive_s:g}", env={"AE_KEEP_ALIVE_S": str(keep_alive_s)}) as server:
                races.append(await keep_alive_race(server, setup, keep_alive_s, sizes.keep_alive_race_tries))
        results["keep-alive-race"] = races
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the small, fast version the test suite runs")
    parser.add_argument("--checkpoints-dir", type=Path, default=REPO_ROOT / "checkpoints")
    parser.add_argument("--default-models", type=json.loads, default=None, help="JSON, as AE_DEFAULT_MODELS")
    parser.add_argument("--model", default="mnist-denoise", help="the denoising model to load and replace")
    parser.add_argument("--only", nargs="*", help="run only these faults (names as in the report)")
    parser.add_argument("--output", type=Path, help="also write the results to this JSON file")
    parser.add_argument(
        "--admission-same-name",
        action="store_true",
        help="for comparison: the query always names the same made-up model",
    )
    parser.add_argument("--keep-logs", type=Path, help="work in this folder and keep the servers' logs there")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ae-chaos-") as work:
        work_dir = Path(work)
        if args.keep_logs:
            shutil.rmtree(args.keep_logs, ignore_errors=True)
            work_dir = args.keep_logs
            work_dir.mkdir(parents=True)
        # The swap rewrites a checkpoint: the run works on a copy of the folder.
        checkpoints = work_dir / "checkpoints"
        shutil.copytree(args.checkpoints_dir, checkpoints)
        setup = Setup(checkpoints, args.default_models, args.model, work_dir)
        load_average = os.getloadavg()
        started = time.monotonic()
        only = set(args.only) if args.only else None
        results = asyncio.run(run_faults(setup, SHORT if args.short else FULL, only, args.admission_same_name))
        report = {
            "machine": machine_description("cpu"),
            "load_average_before": load_average,
            "load_average_after": os.getloadavg(),
            "seconds": round(time.monotonic() - started, 1),
            "short": args.short,
            **results,
        }
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
