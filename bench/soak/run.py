"""Soak test: many mixed requests, valid and hostile, against a real `uvicorn app.main:app`, watching its memory.

The server runs on the checkpoints given (the shipped ones by default) on a free loopback port. A
fixed, seeded schedule of requests is sent by `--concurrency` client tasks; every `--sample-every`
answered requests the server's resident memory (VmRSS from /proc/<pid>/status) is recorded. At the end
the script writes a Markdown report with the curve and a verdict on whether the memory levels off:
the growth over the second half of the run is compared with the growth over the first half.

    python -m bench.soak --requests 20000 --concurrency 16 --output docs/soak.md

The run is bounded by both `--requests` and `--max-seconds`. Any 5xx, any transport error, or a
server that is no longer ready at the end is reported (and makes the exit status 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.harness import free_port, machine_description, stop_process
from bench.soak.schedule import Call, build_schedule

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Sample:
    requests: int
    seconds: float
    rss_kib: int


@dataclass
class Tally:
    by_kind: dict[str, Counter[int]] = field(default_factory=dict)
    valid_kinds: set[str] = field(default_factory=set)
    transport_errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # a valid request refused or a hostile one accepted

    def record(self, call: Call, status: int) -> None:
        self.by_kind.setdefault(call.kind, Counter())[status] += 1
        if call.valid:
            self.valid_kinds.add(call.kind)
        if (200 <= status < 300) != call.valid and len(self.unexpected) < 20:
            self.unexpected.append(f"{call.kind}: {status}")

    @property
    def server_errors(self) -> int:
        return sum(count for statuses in self.by_kind.values() for status, count in statuses.items() if status >= 500)


# -- the server and the run ----------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def start_server(args: argparse.Namespace, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "AE_CHECKPOINTS_DIR": str(args.checkpoints),
        "AE_DEVICE": "cpu",
        "AE_TORCH_THREADS": str(args.torch_threads),
        "AE_MAX_BODY_BYTES": str(args.max_body_bytes),
        "AE_LOG_LEVEL": "warning",  # 20,000 access-log lines would only fill the log file
    }
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:  # a file, never an unread pipe (a full pipe blocks the server)
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_until_ready(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError("the server was not ready within 180 s")


async def run_schedule(
    base_url: str,
    schedule: list[Call],
    concurrency: int,
    max_seconds: float,
    pid: int | None = None,
    sample_every: int = 1000,
) -> tuple[Tally, list[Sample], float]:
    """Send the schedule with `concurrency` client tasks; read the RSS of process `pid` every `sample_every`
    answers (no samples without a pid). -> the tally, the samples and the seconds taken."""
    tally = Tally()
    samples = [Sample(0, 0.0, rss_kib(pid))] if pid is not None else []
    next_index = 0
    done = 0
    started = time.monotonic()
    deadline = started + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index, done
        while next_index < len(schedule) and time.monotonic() < deadline:
            call = schedule[next_index]
            next_index += 1
            try:
                response = await client.request(call.method, call.path, **call.options)
                tally.record(call, response.status_code)
            except httpx.TransportError as exc:
                if len(tally.transport_errors) < 20:
                    tally.transport_errors.append(f"{call.kind}: {exc!r}")
                tally.record(call, 0)
            done += 1
            if pid is not None and done % sample_every == 0:
                samples.append(Sample(done, time.monotonic() - started, rss_kib(pid)))

    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    if pid is not None and samples[-1].requests != done:
        samples.append(Sample(done, time.monotonic() - started, rss_kib(pid)))
    return tally, samples, time.monotonic() - started


# -- the report ----------------------------------------------------------------------------------------


def rss_at(samples: list[Sample], requests: int) -> Sample:
    """The sample taken nearest to `requests` answered requests."""
    return min(samples, key=lambda sample: abs(sample.requests - requests))


@dataclass
class Verdict:
    first_half_mib: float
    second_half_mib: float
    last_quarter_mib_per_10k: float  # the rate at the end: what a much longer run would add
    levels_off: bool
    rule: str


def judge(samples: list[Sample], warm_up: int, tolerance_mib: float) -> Verdict:
    """Memory levels off when the second half grows by at most half of the first half's growth, or by less
    than `tolerance_mib` (allocator noise). The first `warm_up` requests are not counted: caches, thread
    pools and arenas fill there by design."""
    end = samples[-1]
    start = rss_at(samples, warm_up)
    middle = rss_at(samples, (start.requests + end.requests) // 2)
    first = (middle.rss_kib - start.rss_kib) / 1024
    second = (end.rss_kib - middle.rss_kib) / 1024
    levels_off = second <= max(tolerance_mib, 0.5 * first)
    quarter = rss_at(samples, end.requests - (end.requests - start.requests) // 4)
    per_10k = (end.rss_kib - quarter.rss_kib) / 1024 / max(1, end.requests - quarter.requests) * 10000
    rule = (
        f"growth from request {middle.requests} to {end.requests} <= max({tolerance_mib:g} MiB, half the growth "
        f"from request {start.requests} to {middle.requests})"
    )
    return Verdict(first, second, per_10k, levels_off, rule)


def git_revision() -> str:
    """The commit the code was at, marked when the working tree had changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True)
    except OSError:
        return "an unknown commit"
    return head.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def report(
    args: argparse.Namespace, tally: Tally, samples: list[Sample], seconds: float, verdict: Verdict, ready: bool
) -> str:
    total = samples[-1].requests
    command = " ".join(["python -m bench.soak", *sys.argv[1:]])
    machine = machine_description("cpu")
    lines = [
        f"# Soak test: memory under {total:,} mixed requests",
        "",
        f"Generated by `{command}` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, code at {git_revision()}). "
        "Rerun it to reproduce.",
        "",
        f"One `uvicorn app.main:app` process (1 worker, `AE_TORCH_THREADS={args.torch_threads}`, "
        f"`AE_MAX_BODY_BYTES={args.max_body_bytes}`) served the checkpoints in `{args.checkpoints}` on loopback; "
        f"{args.concurrency} client tasks (httpx, in the same machine) sent a fixed schedule (seed {args.seed}) of "
        f"valid and hostile requests. The server's resident memory (VmRSS from `/proc/<pid>/status`) was read "
        f"every {args.sample_every} answers.",
        "",
        "Machine: " + "; ".join(f"{key}: {value}" for key, value in machine.items()),
        "",
        "## Result",
        "",
        f"- {total} requests in {seconds:.0f} s ({total / seconds:.0f} requests/s), "
        f"{tally.server_errors} answered 5xx, {len(tally.transport_errors)} transport errors; "
        f"`/readyz` afterwards: {'200 (ready)' if ready else 'NOT ready'}.",
        f"- Resident memory: {mib(samples[0].rss_kib)} MiB when ready, {mib(samples[-1].rss_kib)} MiB at the end, "
        f"peak sample {mib(max(s.rss_kib for s in samples))} MiB.",
        f"- Growth after the first {args.warm_up} requests: first half {verdict.first_half_mib:+.1f} MiB, "
        f"second half {verdict.second_half_mib:+.1f} MiB; over the last quarter "
        f"{verdict.last_quarter_mib_per_10k:+.2f} MiB per 10,000 requests.",
        f"- **Verdict: {'the memory levels off' if verdict.levels_off else 'the memory does NOT level off'}** "
        f"(rule: {verdict.rule}).",
        "",
        "## Resident memory against requests answered",
        "",
        "| requests | seconds | RSS (MiB) |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {s.requests} | {s.seconds:.1f} | {mib(s.rss_kib)} |" for s in samples]
    lines += ["", "## Requests by kind", "", "| kind | expected | answers (status: count) |", "|---|---|---|"]
    for kind, statuses in sorted(tally.by_kind.items()):
        expected = "2xx" if kind in tally.valid_kinds else "4xx"
        answers = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
        lines.append(f"| {kind} | {expected} | {answers} |")
    if tally.unexpected or tally.transport_errors:
        lines += ["", "## Unexpected answers (first 20)", ""]
        lines += [f"- {item}" for item in tally.unexpected + tally.transport_errors]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sample-every", type=int, default=1000, help="answers between two RSS readings")
    parser.add_argument("--warm-up", type=int, default=2000, help="requests left out of the verdict")
    parser.add_argument("--tolerance-mib", type=float, default=8.0)
    parser.add_argument("--max-seconds", type=float, default=1200, help="stop sending after this long")
    parser.add_argument("--max-body-bytes", type=int, default=1024 * 1024)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="write the Markdown report here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    schedule = build_schedule(args.requests, args.seed, args.max_body_bytes)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"soak-uvicorn-{port}.log"
    process = start_server(args, port, log_path)
    try:
        wait_until_ready(process, base_url, log_path)
        tally, samples, seconds = asyncio.run(
            run_schedule(base_url, schedule, args.concurrency, args.max_seconds, process.pid, args.sample_every)
        )
        ready = process.poll() is None and httpx.get(f"{base_url}/readyz", timeout=10).status_code == 200
    finally:
        stop_process(process)
    verdict = judge(samples, args.warm_up, args.tolerance_mib)
    text_report = report(args, tally, samples, seconds, verdict, ready)
    if args.output is not None:
        args.output.write_text(text_report)
    print(text_report)
    print(json.dumps({"server_log": str(log_path)}), file=sys.stderr)
    failed = tally.server_errors > 0 or bool(tally.transport_errors) or not ready or not verdict.levels_off
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
