"""Overload: the service as `ae-serve` runs it, closed loop to find its best rate, then open-loop floods.

    python -m bench.overload --data-dir /work/shared/datasets/mnist [--factors 2 4 10] [--env AE_X=Y ...]

The server (`ae-serve`: the guarded protocol, its connection cap and deadlines) is pinned to core 0, the
load generator (`bench.loadgen`) to core 1. First 32 and 128 closed-loop clients; the better rate is the
"best closed-loop rate". Then an open loop at each factor of it for `--duration` seconds with at most
`MAX_CONNECTIONS` client connections: requests are due at a fixed rate, latency counts from when a request
was due, and one without an answer within `HANG_S` counts as hung. `bench.run` calls `bench_overload` for
docs/benchmarks.md; run alone, this prints the runs as JSON (for measuring one lever at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.harness import (
    HANG_S,
    MODEL,
    SERVER_CORE,
    Run,
    free_port,
    load,
    measured,
    scrape,
    service_env,
    stop_process,
    wait_until_ready,
    write_pngs,
)

FACTORS = (2.0, 4.0, 10.0)
MAX_CONNECTIONS = 1024
CLOSED_CLIENTS = (32, 128)
CLIENT_TIMEOUT_S = 15.0


def flood_workload(factor: float, rate: float) -> str:
    return f"1 image, open loop at {factor:g}x best = {rate:.0f} req/s"


@contextmanager
def ae_serve(env: dict[str, str], log: Path, probe_png: bytes) -> Iterator[tuple[int, int]]:
    """`ae-serve` pinned to the server core; yields (port, pid) once /v1/denoise answers 200."""
    port = free_port()
    command = ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "app.process.cli", "--port", str(port)]
    with log.open("w") as log_file:
        process = subprocess.Popen(
            command, env=os.environ | env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_until_ready(process, port, probe_png, "/v1/denoise", log)
            yield port, process.pid
        finally:
            stop_process(process, timeout_s=15)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def answer_costs(args: argparse.Namespace, images_dir: Path, png: bytes, logs: Path) -> dict[str, float]:
    """The server's CPU time per answer: served (32 closed-loop clients, every request a 200), and refused
    (the same with AE_BATCH_MAX_QUEUE_IMAGES=1: one request in flight, nearly every other one refused at
    the front door; the served ones' share is taken out at the served cost)."""
    costs: dict[str, float] = {}
    path = f"/v1/denoise?model={MODEL}"
    for regime, extra in (("served", {}), ("refused", {"AE_BATCH_MAX_QUEUE_IMAGES": "1"})):
        with ae_serve(service_env(args) | extra, logs / f"cost-{regime}.log", png) as (port, pid):
            before = cpu_seconds(pid)
            result = load(port, args, images_dir, path, concurrency=32, warmup=0)
            spent = cpu_seconds(pid) - before
        ok = result["statuses"].get("200", 0)
        refused = result["statuses"].get("503", 0)
        if regime == "served":
            costs["served_cpu_ms"] = spent / max(1, ok) * 1000
        else:
            costs["refused_cpu_ms"] = (spent - ok * costs["served_cpu_ms"] / 1000) / max(1, refused) * 1000
            costs["refused_share"] = refused / max(1, ok + refused)
    return costs


def bench_overload(
    args: argparse.Namespace,
    images_dir: Path,
    png: bytes,
    logs: Path,
    factors: tuple[float, ...] = FACTORS,
    env: dict[str, str] | None = None,
    name: str = "service (ae-serve)",
) -> list[Run]:
    """Closed loop at 32 and 128 clients, then an open loop at each factor of the better of the two."""
    runs: list[Run] = []
    environment = service_env(args) | (env or {})
    with ae_serve(environment, logs / f"{name}.log", png) as (port, _pid):
        path = f"/v1/denoise?model={MODEL}"

        def measure(workload: str, **options: Any) -> Run:
            before = scrape(port)
            return measured(port, Run(name, workload, load(port, args, images_dir, path, **options)), before)

        for clients in CLOSED_CLIENTS:
            runs.append(measure(f"1 image, {clients} clients", concurrency=clients))
        best = max(run.result["requests_per_s"] for run in runs)
        for factor in factors:
            rate = factor * best
            options = {"rate": f"{rate:.0f}", "max_connections": MAX_CONNECTIONS, "timeout": CLIENT_TIMEOUT_S}
            runs.append(measure(flood_workload(factor, rate), **options, slow=HANG_S))
    return runs


def flood_summary(run: Run, best: float) -> dict[str, Any]:
    """What the targets of a flood look at, from one open-loop run."""
    result = run.result
    return {
        "workload": run.workload,
        "due": result["due_in_window"],
        "statuses": result["statuses"],
        "hung": result["timeouts"] + result["slower_than_slow"],
        "errors": result["errors"],
        "p99_503_ms": None if result["latency_503_s"]["p99"] is None else result["latency_503_s"]["p99"] * 1000,
        "p99_200_ms": None if result["latency_ok_s"]["p99"] is None else result["latency_ok_s"]["p99"] * 1000,
        "ok_per_s": result["requests_per_s"],
        "ok_share_of_best": result["requests_per_s"] / best if best else None,
        "connections": result["connections"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--factors", type=float, nargs="*", default=list(FACTORS))
    parser.add_argument("--env", nargs="*", default=[], help="AE_NAME=value settings for the service")
    parser.add_argument("--costs", action="store_true", help="only the CPU time of a served and a refused answer")
    args = parser.parse_args(argv)
    args.checkpoints = args.checkpoints.resolve()
    env = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory(prefix="ae-overload-") as scratch:
        images_dir = Path(scratch) / "pngs"
        images_dir.mkdir()
        pngs = write_pngs(args.data_dir, images_dir)
        if args.costs:
            print(json.dumps(answer_costs(args, images_dir, pngs[0].read_bytes(), Path(scratch))))
            return
        runs = bench_overload(args, images_dir, pngs[0].read_bytes(), Path(scratch), tuple(args.factors), env)
    best = max(run.result["requests_per_s"] for run in runs if run.result["mode"] == "closed")
    for run in runs:
        if run.result["mode"] == "closed":
            latency = run.result["latency_ok_s"]
            line = {"workload": run.workload, "requests_per_s": run.result["requests_per_s"]}
            line |= {"p99_ms": (latency["p99"] or 0) * 1000, "statuses": run.result["statuses"]}
            print(json.dumps(line))
        else:
            print(json.dumps(flood_summary(run, best)))


if __name__ == "__main__":
    main()


def flood_target_lines(floods: list[Run], costs: dict[str, float]) -> list[str]:
    """Rows of the targets table (issue 19) for the floods, and the cost of a refusal against a served answer."""
    best = max(run.result["requests_per_s"] for run in floods if run.result["mode"] == "closed")
    lines = []
    for run in floods:
        if run.result["mode"] != "open":
            continue
        flood = flood_summary(run, best)
        label = run.workload.split(" = ")[0].replace("1 image, ", "")
        only = set(flood["statuses"]) <= {"200", "503"} and not flood["hung"] and not flood["errors"]
        p99_503, p99_200 = flood["p99_503_ms"], flood["p99_200_ms"]
        lines += [
            f"| {label}: every request 200 or 503, none without an answer within {HANG_S:g} s "
            f"| {flood['due']} due; answers {json.dumps(flood['statuses'])}; {flood['hung']} hung; errors "
            f"{json.dumps(flood['errors'])} ({flood['connections']} connections) | {verdict(only)} |",
            f"| {label}: 503 p99 <= 100 ms | {fmt_ms(p99_503)} ms | {verdict(p99_503 is None or p99_503 <= 100)} |",
            f"| {label}: 200 p99 <= 1 s | {fmt_ms(p99_200)} ms | {verdict(p99_200 is not None and p99_200 <= 1000)} |",
            f"| {label}: 200s answered in time >= 80% of the best closed-loop rate | {flood['ok_per_s']:,.0f} vs "
            f"{best:,.0f} req/s = {flood['ok_share_of_best']:.0%} | {verdict(flood['ok_share_of_best'] >= 0.8)} |",
        ]
    if costs:
        lines.append(
            f"| (measured) server CPU per answer: served vs refused at the front door | {costs['served_cpu_ms']:.3f} "
            f"vs {costs['refused_cpu_ms']:.3f} ms = 1/{costs['served_cpu_ms'] / costs['refused_cpu_ms']:.0f} | – |"
        )
    return lines


def fmt_ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"
