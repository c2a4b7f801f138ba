"""A small HTTP/1.1 load generator: raw asyncio sockets with keep-alive, one JSON report on stdout.

It is run as its own process (pinned by the caller with `taskset` to a core the server does not use)
so that it never competes with the server for the event loop. It writes requests as prebuilt bytes
and parses only the status line and the body framing of responses, which keeps its own cost per
request far below the server's; `bench.run` checks this against a trivial endpoint and reports the
generator's CPU use next to every measurement.

Two modes:
- closed loop (`--concurrency N`): N connections, each sends its next request as soon as the
  previous answer arrives. Measures throughput and latency at a given concurrency.
- open loop (`--rate R`): requests are due at a fixed rate whether or not the server keeps up, each
  on a free connection (opening new ones up to `--max-connections`). Latency counts from the moment a
  request was due, so a server that falls behind cannot hide it (no coordinated omission).

Usage (what bench.run does):
    python -m bench.loadgen --port 8000 --path /v1/denoise --images-dir DIR --images-per-request 1 \
        --concurrency 32 --duration 5 --warmup 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BOUNDARY = "benchboundary7MA4YWxkTrZu0gW"


def multipart_body(pngs: list[bytes]) -> bytes:
    """A multipart/form-data body with one file part named `image` per PNG."""
    chunks: list[bytes] = []
    for index, png in enumerate(pngs):
        chunks.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="digit{index}.png"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode()
        )
        chunks.append(png)
        chunks.append(b"\r\n")
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks)


def build_requests(args: argparse.Namespace) -> list[bytes]:
    """Prebuilt request bytes; requests cycle through the PNGs so that bodies differ."""
    host = f"{args.host}:{args.port}"
    if args.images_dir is None:
        return [f"GET {args.path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()]
    pngs = [path.read_bytes() for path in sorted(Path(args.images_dir).glob("*.png"))]
    if not pngs:
        raise SystemExit(f"no PNG files in {args.images_dir}")
    per_request = args.images_per_request
    requests = []
    for start in range(0, max(len(pngs), 64 * per_request), per_request):
        chosen = [pngs[(start + i) % len(pngs)] for i in range(per_request)]
        body = multipart_body(chosen)
        head = (
            f"POST {args.path} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
        if len(requests) >= 64:
            break
    return requests


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; -> (status, whether the server will close the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    chunked = closing = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        elif name == "connection" and "close" in value.lower():
            closing = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)  # the chunk and its CRLF
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, closing


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, data: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(data)
        status, closing = await read_response(self.reader)
        if closing:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Outcome:
    due: float  # when the request was due (closed loop: sent)
    ended: float  # when its answer (or failure) came
    status: int | None  # None: no answer (timeout or connection error)
    failure: str | None = None  # "timeout" or the exception's name


@dataclass
class Results:
    window_start: float
    window_end: float
    outcomes: list[Outcome] = field(default_factory=list)
    unanswered: int = 0  # open loop: requests due in the window still without answer at the end
    connections: int = 0  # connections opened


async def send_one(connection: Connection, data: bytes, due: float, timeout: float, results: Results) -> None:
    try:
        async with asyncio.timeout(timeout):
            status = await connection.request(data)
        results.outcomes.append(Outcome(due, time.perf_counter(), status))
    except TimeoutError:
        connection.close()
        results.outcomes.append(Outcome(due, time.perf_counter(), None, "timeout"))
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        connection.close()
        results.outcomes.append(Outcome(due, time.perf_counter(), None, type(exc).__name__))


async def closed_loop(args: argparse.Namespace, requests: list[bytes], results: Results) -> None:
    async def client(index: int) -> None:
        connection = Connection(args.host, args.port)
        count = index
        while time.perf_counter() < results.window_end:
            await send_one(connection, requests[count % len(requests)], time.perf_counter(), args.timeout, results)
            count += args.concurrency
        connection.close()

    await asyncio.gather(*(client(index) for index in range(args.concurrency)))


async def open_loop(args: argparse.Namespace, requests: list[bytes], results: Results) -> None:
    idle: asyncio.Queue[Connection] = asyncio.Queue()  # open connections without a request in flight
    opened = 0
    pending: set[asyncio.Task[None]] = set()

    in_flight: dict[int, float] = {}  # request number -> when it was due

    async def one(number: int, data: bytes, due: float) -> None:
        nonlocal opened
        if not idle.empty():
            connection = idle.get_nowait()
        elif opened < args.max_connections:
            opened += 1
            results.connections = opened
            connection = Connection(args.host, args.port)
        else:  # every connection is busy: wait for one (this wait counts in the latency)
            connection = await idle.get()
        await send_one(connection, data, due, args.timeout, results)
        del in_flight[number]
        idle.put_nowait(connection)

    start = time.perf_counter()
    interval = 1.0 / args.rate
    count = 0
    while True:
        due = start + count * interval
        if due > results.window_end:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        in_flight[count] = due
        task = asyncio.create_task(one(count, requests[count % len(requests)], due))
        pending.add(task)
        task.add_done_callback(pending.discard)
        count += 1
    if pending:
        await asyncio.wait(pending, timeout=args.timeout + 1)
    # Neither answered nor timed out (e.g. still waiting for a connection): counted as hung.
    results.unanswered = sum(1 for due in in_flight.values() if results.window_start <= due <= results.window_end)
    while not idle.empty():
        idle.get_nowait().close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float | None]:
    return {f"p{q}": percentile(values, q) for q in (50, 95, 99)} | {"max": max(values) if values else None}


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    requests = build_requests(args)
    now = time.perf_counter()
    results = Results(window_start=now + args.warmup, window_end=now + args.warmup + args.duration)
    cpu_before = time.process_time()
    if args.rate:
        await open_loop(args, requests, results)
    else:
        await closed_loop(args, requests, results)
    elapsed = time.perf_counter() - now
    return summarise(args, results) | {"generator_cpu_share": (time.process_time() - cpu_before) / elapsed}


def summarise(args: argparse.Namespace, results: Results) -> dict[str, object]:
    """Throughput counts answers that arrived inside the window. Statuses and latencies cover, in the
    closed loop, the same answers; in the open loop, every request *due* in the window, however late
    its answer came, so that a request the server sat on shows up as slow or hung."""

    def in_window(moment: float) -> bool:
        return results.window_start <= moment <= results.window_end

    ok_in_window = [o for o in results.outcomes if o.status == 200 and in_window(o.ended)]
    if args.rate:
        considered = [o for o in results.outcomes if in_window(o.due)]
    else:
        considered = [o for o in results.outcomes if in_window(o.ended)]
    slow = [o for o in considered if o.status is not None and args.slow and o.ended - o.due > args.slow]
    if args.rate:  # goodput: requests due in the window that got a 200 in time (not hung)
        useful = [o for o in considered if o.status == 200 and not (args.slow and o.ended - o.due > args.slow)]
        requests_per_s = len(useful) / args.duration
    else:
        requests_per_s = len(ok_in_window) / args.duration
    statuses: dict[str, int] = {}
    failures: dict[str, int] = {}
    for outcome in considered:
        if outcome.status is not None:
            statuses[str(outcome.status)] = statuses.get(str(outcome.status), 0) + 1
        else:
            assert outcome.failure is not None
            failures[outcome.failure] = failures.get(outcome.failure, 0) + 1
    timeouts = failures.pop("timeout", 0) + results.unanswered
    return {
        "mode": "open" if args.rate else "closed",
        "concurrency": args.concurrency,
        "rate": args.rate,
        "images_per_request": args.images_per_request if args.images_dir else 0,
        "duration_s": args.duration,
        "requests_per_s": requests_per_s,
        "completed_200_in_window_per_s": len(ok_in_window) / args.duration,
        "slower_than_slow": len(slow),
        "statuses": dict(sorted(statuses.items())),
        "latency_ok_s": summary([o.ended - o.due for o in considered if o.status == 200]),
        "latency_503_s": summary([o.ended - o.due for o in considered if o.status == 503]),
        "timeouts": timeouts,
        "errors": failures,
        "due_in_window": sum(1 for o in results.outcomes if in_window(o.due)) + results.unanswered,
        "connections": results.connections if args.rate else args.concurrency,
    } | ({"timeline": timeline(results)} if args.rate else {})


def timeline(results: Results, step_s: float = 0.5) -> list[dict[str, Any]]:
    """Open loop: per `step_s` of due time from the start (warm-up included), the requests due, their
    answers and their median latency, to see where a backlog forms and whether it drains."""
    start = results.window_start - results.window_start % 1  # any origin will do; the warm-up's start
    buckets: dict[int, list[Outcome]] = {}
    for outcome in results.outcomes:
        buckets.setdefault(int((outcome.due - start) // step_s), []).append(outcome)
    rows = []
    for index in sorted(buckets):
        outcomes = buckets[index]
        latencies = [o.ended - o.due for o in outcomes]
        rows.append(
            {
                "due_s": round(index * step_s, 2),
                "requests": len(outcomes),
                "ok": sum(1 for o in outcomes if o.status == 200),
                "refused": sum(1 for o in outcomes if o.status == 503),
                "p50_ms": round((percentile(latencies, 50) or 0) * 1000, 1),
            }
        )
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/denoise")
    parser.add_argument("--images-dir", type=Path, help="PNG files to upload; without it: GET requests")
    parser.add_argument("--images-per-request", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1, help="closed loop: connections")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: requests per second")
    parser.add_argument("--max-connections", type=int, default=4096, help="open loop: connection cap")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--timeout", type=float, default=15.0, help="a request without answer by then hung")
    parser.add_argument("--slow", type=float, default=0.0, help="open loop: answers later than this are hung too")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    json.dump(asyncio.run(main_async(args)), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
