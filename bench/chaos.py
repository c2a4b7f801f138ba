"""Chaos run: faults in a server's life, against real `ae-serve` processes (uvicorn) on the loopback.

    python -m bench.chaos                       # the full run of docs/reliability.md (several minutes)
    python -m bench.chaos --short               # the version the test suite runs (tests/app/test_chaos_short.py)
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
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image

from bench.run import free_port, machine_description, stop_process
from models.checkpoint import load_checkpoint, save_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
ADMIN_KEY = "chaos-admin-key"
ANSWER_TIMEOUT_S = 60.0  # a request with no answer after this counts as lost (none should get near it)


# -- one request on a raw connection -------------------------------------------------------------------


class Lost(Exception):
    """The request was written, then the connection ended without a complete answer."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def closes(self) -> bool:
        return "close" in self.headers.get("connection", "").lower()


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
        raise Lost(f"no answer: {type(exc).__name__}") from None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    try:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                body += (await reader.readexactly(size + 2))[:size]
                if size == 0:
                    break
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise Lost(f"answer cut short: {type(exc).__name__}") from None
    return Answer(status, headers, body)


def http_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: {HOST}", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Tally:
    """What became of the requests of one fault's clients."""

    sent: int = 0
    answered: Counter[int] = field(default_factory=Counter)
    lost: int = 0
    refused: int = 0
    lost_at: list[float] = field(default_factory=list)  # time.monotonic() of each loss
    lost_how: list[str] = field(default_factory=list)  # what the client saw, per loss
    lost_on_old_connection: int = 0  # written on a connection that had already carried an answer

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "answered": {str(status): count for status, count in sorted(self.answered.items())},
            "lost": self.lost,
            "lost_on_reused_connection": self.lost_on_old_connection,
            "refused_connections": self.refused,
        }


async def client_loop(
    port: int,
    make_request: Callable[[int], bytes],
    tally: Tally,
    stop: asyncio.Event,
    deadline: float,
    max_requests: int | None = None,
    stop_when_refused: bool = False,
    answers: list[Answer] | None = None,
) -> None:
    """One client: requests one after the other on a keep-alive connection (a new one after a
    `Connection: close`), until `stop`, `deadline`, `max_requests` or (optionally) a refused connect."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    carried = 0  # answers received on the current connection
    number = 0
    while not stop.is_set() and time.monotonic() < deadline and (max_requests is None or number < max_requests):
        if writer is None:
            try:
                reader, writer = await asyncio.open_connection(HOST, port)
                carried = 0
            except OSError:
                tally.refused += 1
                if stop_when_refused:
                    return
                await asyncio.sleep(0.05)
                continue
        assert reader is not None
        number += 1
        tally.sent += 1
        try:
            writer.write(make_request(number))
            await writer.drain()
            answer = await asyncio.wait_for(read_answer(reader), ANSWER_TIMEOUT_S)
        except (Lost, ConnectionError, TimeoutError) as exc:
            tally.lost += 1
            tally.lost_at.append(time.monotonic())
            tally.lost_how.append(str(exc) or type(exc).__name__)
            tally.lost_on_old_connection += carried > 0
            writer.close()
            writer = None
            continue
        tally.answered[answer.status] += 1
        carried += 1
        if answers is not None:
            answers.append(answer)
        if answer.closes:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def get(port: int, path: str, timeout: float = 10.0) -> Answer:
    """One GET on a fresh connection."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    try:
        writer.write(http_request("GET", path, headers={"connection": "close"}))
        return await asyncio.wait_for(read_answer(reader), timeout)
    finally:
        writer.close()


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


# -- requests ------------------------------------------------------------------------------------------


def digit_png(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((28, 28)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def denoise_request(model: str, png: bytes, keep_alive: bool = True) -> Callable[[int], bytes]:
    headers = {"content-type": "image/png"} | ({} if keep_alive else {"connection": "close"})
    request = http_request("POST", f"/v1/denoise?model={model}", png, headers)
    return lambda number: request


def made_up_name_request(model: str, png: bytes, new_names: bool = True) -> Callable[[int], bytes]:
    """Each request names a new made-up model in its query (or, for comparison, always the same one), and
    the real one in its (multipart) body."""
    boundary = "chaosboundary"
    body = (
        (
            f'--{boundary}\r\ncontent-disposition: form-data; name="model"\r\n\r\n{model}\r\n'
            f'--{boundary}\r\ncontent-disposition: form-data; name="image"; filename="d.png"\r\n'
            "content-type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    salt = random.Random(0).getrandbits(32)
    return lambda number: http_request(
        "POST", f"/v1/denoise?model=made-up-{salt}-{number if new_names else 0}", body, headers
    )


async def load_for(port: int, make_request: Callable[[int], bytes], clients: int, seconds: float) -> Tally:
    tally = Tally()
    stop = asyncio.Event()
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(client_loop(port, make_request, tally, stop, deadline) for _ in range(clients)))
    return tally


# -- 1. slow headers -----------------------------------------------------------------------------------


async def slow_headers(server: Server, connections: int, header_timeout_s: float, per_second: int) -> dict[str, Any]:
    """`connections` clients, `per_second` more each second, that each send a request's headers one line
    a second, never finishing."""
    baseline = open_fds(server.pid)
    opened: list[float] = []
    closed_after: list[float] = []  # seconds from opening to the server's answer or close
    statuses: Counter[str] = Counter()
    never_closed = 0
    probe_ms: list[tuple[float, float]] = []  # (seconds into the attack, milliseconds)
    probe_failures: list[str] = []
    fds: list[int] = []
    attack_over = asyncio.Event()
    limit = header_timeout_s * 2 + 10

    async def slow_client() -> None:
        nonlocal never_closed
        try:
            reader, writer = await asyncio.open_connection(HOST, server.port)
        except OSError as exc:
            statuses[f"connect failed: {type(exc).__name__}"] += 1
            return
        started = time.monotonic()
        opened.append(started)

        async def drip() -> None:
            with suppress(OSError):
                writer.write(f"POST /v1/denoise HTTP/1.1\r\nhost: {HOST}\r\n".encode())
                for line in range(int(limit) + 1):
                    await asyncio.sleep(1.0)
                    writer.write(f"x-slow-{line}: 1\r\n".encode())
                    await writer.drain()

        dripping = asyncio.create_task(drip())
        try:
            data = await asyncio.wait_for(reader.read(4096), limit)
            closed_after.append(time.monotonic() - started)
            statuses[data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "closed"] += 1
        except (TimeoutError, ConnectionError):
            never_closed += 1
        finally:
            dripping.cancel()
            writer.close()

    async def probe() -> None:
        while not attack_over.is_set():
            started = time.monotonic()
            try:
                answer = await get(server.port, "/healthz", timeout=5)
                if answer.status != 200:
                    probe_failures.append(str(answer.status))
            except (OSError, Lost, TimeoutError) as exc:
                probe_failures.append(type(exc).__name__)
            probe_ms.append((started - attack_started, (time.monotonic() - started) * 1000))
            await asyncio.sleep(0.1)

    async def count_fds() -> None:
        while not attack_over.is_set():
            fds.append(open_fds(server.pid))
            await asyncio.sleep(0.25)

    async def staggered(index: int) -> None:
        await asyncio.sleep(index / per_second)
        await slow_client()

    attack_started = time.monotonic()
    watchers = [asyncio.create_task(probe()), asyncio.create_task(count_fds())]
    await asyncio.gather(*(staggered(index) for index in range(connections)))
    attack_seconds = time.monotonic() - attack_started
    attack_over.set()
    await asyncio.gather(*watchers)
    await asyncio.sleep(LINGER_WAIT_S)
    after = open_fds(server.pid)
    return {
        "connections": connections,
        "header_timeout_s": header_timeout_s,
        "answers": dict(statuses),
        "never_closed": never_closed,
        "opened_per_second": per_second,
        "open_s_median": round(float(np.median(closed_after)), 2) if closed_after else None,
        "open_s_p99": round(float(np.percentile(closed_after, 99)), 2) if closed_after else None,
        "longest_open_s": round(max(closed_after, default=0.0), 2),
        "attack_s": round(attack_seconds, 1),
        "health_probes": len(probe_ms),
        "health_probe_failures": probe_failures[:10],
        "health_probe_ms_median": round(float(np.median([ms for _, ms in probe_ms])), 1) if probe_ms else None,
        "health_probe_ms_p99": round(float(np.percentile([ms for _, ms in probe_ms], 99)), 1) if probe_ms else None,
        "health_probe_ms_max": round(max(ms for _, ms in probe_ms), 1) if probe_ms else None,
        "health_probes_over_100ms_at_s": [(round(at, 1), round(ms)) for at, ms in probe_ms if ms > 100][:20],
        "fds_baseline": baseline,
        "fds_max": max(fds, default=baseline),
        "fds_after": after,
    }


LINGER_WAIT_S = 2.0  # after an attack: the server's refused connections linger up to a second


# -- 2. checkpoint swap under load ---------------------------------------------------------------------


def write_replacement(directory: Path, scale: float) -> str:
    """Rewrite the checkpoint in `directory` with its weights scaled (a new, valid checkpoint), each file by
    a rename; -> the new sha256."""
    checkpoint = load_checkpoint(directory)
    with torch.no_grad():
        for parameter in checkpoint.model.parameters():
            parameter.mul_(scale)
    staging = directory.parent / f".{directory.name}.new"
    shutil.rmtree(staging, ignore_errors=True)
    card = save_checkpoint(checkpoint.model, checkpoint.card, staging)
    for item in staging.iterdir():
        os.replace(item, directory / item.name)
    staging.rmdir()
    return str(card.weights_sha256)


def write_corrupt_weights(directory: Path) -> None:
    weights = directory / "model.safetensors"
    broken = directory / ".model.safetensors.broken"
    broken.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    os.replace(broken, weights)


async def reload_model(port: int, model: str) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.post(
            f"http://{HOST}:{port}/v1/models/{model}/reload", headers={"authorization": f"Bearer {ADMIN_KEY}"}
        )
    return response.status_code, response.json(), time.monotonic() - started


async def serving_sha(port: int, model: str) -> str:
    answer = await get(port, f"/v1/models/{model}")
    return str(json.loads(answer.body)["sha256"])


async def swap(server: Server, setup: Setup, clients: int, phase_s: float) -> dict[str, Any]:
    directory = setup.checkpoints_dir / setup.model
    original = setup.work_dir / f"{setup.model}.original"
    shutil.copytree(directory, original)  # put back afterwards: the next server must find it whole
    png = digit_png(1)
    make_request = denoise_request(setup.model, png)
    probe = make_request(0)

    async def denoised() -> bytes:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        try:
            writer.write(probe)
            return (await read_answer(reader)).body
        finally:
            writer.close()

    before_sha, before_answer = await serving_sha(server.port, setup.model), await denoised()
    tally = Tally()
    stop = asyncio.Event()
    deadline = time.monotonic() + phase_s * 3 + 120
    load = asyncio.gather(*(client_loop(server.port, make_request, tally, stop, deadline) for _ in range(clients)))
    await asyncio.sleep(phase_s)
    new_sha = await asyncio.to_thread(write_replacement, directory, 1.05)
    status, body, seconds = await reload_model(server.port, setup.model)
    after_sha, after_answer = await serving_sha(server.port, setup.model), await denoised()
    await asyncio.sleep(phase_s)
    await asyncio.to_thread(write_corrupt_weights, directory)
    corrupt_status, corrupt_body, _ = await reload_model(server.port, setup.model)
    sha_after_corrupt = await serving_sha(server.port, setup.model)
    await asyncio.sleep(phase_s)
    stop.set()
    await load
    shutil.rmtree(directory)
    original.rename(directory)
    return {
        "load": tally.summary(),
        "failed": tally.lost + sum(count for status, count in tally.answered.items() if status != 200),
        "sha256_before": before_sha,
        "replacement": {"status": status, "seconds": round(seconds, 2), "sha256_serving": body.get("sha256")},
        "replacement_sha256_written": new_sha,
        "sha256_listed_after": after_sha,
        "answers_changed": before_answer != after_answer,
        "corrupt_replacement": {
            "status": corrupt_status,
            "error": corrupt_body.get("error", {}).get("type"),
            "message": str(corrupt_body.get("error", {}).get("message", ""))[:200],
        },
        "sha256_listed_after_corrupt": sha_after_corrupt,
    }


# -- 3. admission keyed by made-up names ---------------------------------------------------------------


async def admission(server: Server, setup: Setup, requests: int, clients: int, new_names: bool) -> dict[str, Any]:
    """`requests` requests, each naming a new made-up model in its query and the real model in its body."""
    make_request = made_up_name_request(setup.model, digit_png(2), new_names)
    tally = Tally()
    stop = asyncio.Event()
    answers: list[Answer] = []
    rss = [(0, round(rss_mib(server.pid), 1))]
    per_client = -(-requests // clients)
    samples = 10

    async def sample() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.5)
            done = tally.sent
            if done >= rss[-1][0] + requests // samples:
                rss.append((done, round(rss_mib(server.pid), 1)))

    sampler = asyncio.create_task(sample())
    started = time.monotonic()
    await asyncio.gather(
        *(
            client_loop(server.port, make_request, tally, stop, started + 3600, per_client, answers=answers)
            for _ in range(clients)
        )
    )
    seconds = time.monotonic() - started
    stop.set()
    await sampler
    rss.append((tally.sent, round(rss_mib(server.pid), 1)))
    refusals = Counter(
        json.loads(answer.body)["error"]["message"].split(":")[0] for answer in answers if answer.status == 503
    )
    half = len(rss) // 2
    return {
        "requests": tally.sent,
        "new_name_each_request": new_names,
        "clients": clients,
        "seconds": round(seconds, 1),
        "load": tally.summary(),
        "refusals_by_count": dict(refusals.most_common(5)),
        "rss_mib_by_requests": rss,
        "rss_growth_first_half_mib": round(rss[half][1] - rss[0][1], 1),
        "rss_growth_second_half_mib": round(rss[-1][1] - rss[half][1], 1),
    }


# -- 4. clients gone in the middle of their body -------------------------------------------------------


async def disconnects(server: Server, count: int) -> dict[str, Any]:
    before = await metric_total(server.port, 'status="499"')
    first_line = len(server.log.read_text(errors="replace").splitlines())
    for _ in range(count):
        _, writer = await asyncio.open_connection(HOST, server.port)
        head = http_request("POST", "/v1/denoise", b"", {"content-type": "image/png"}).replace(
            b"content-length: 0", b"content-length: 100000"
        )
        writer.write(head + b"\x89PNG" + b"\0" * 1000)
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
    await asyncio.sleep(1.0)
    new_lines = server.log.read_text(errors="replace").splitlines()[first_line:]
    records = [json.loads(line) for line in new_lines if line.startswith("{")]
    return {
        "clients": count,
        "logged_499": sum(1 for r in records if r.get("message") == "request" and r.get("status") == 499),
        "logged_500": sum(1 for r in records if r.get("status") == 500),
        "stack_traces_in_log": sum(1 for line in new_lines if "Traceback" in line or '"exception"' in line),
        "metrics_499": await metric_total(server.port, 'status="499"') - before,
    }


async def metric_total(port: int, *labels: str) -> float:
    """The sum of `ae_requests_total` over the series that have all of `labels` (e.g. 'status="499"')."""
    answer = await get(port, "/metrics")
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in answer.body.decode().splitlines()
        if line.startswith("ae_requests_total{") and all(label in line for label in labels)
    )


# -- 5. drain on SIGTERM -------------------------------------------------------------------------------


async def drain(server: Server, setup: Setup, clients: int, warm_s: float, drain_s: float) -> dict[str, Any]:
    make_request = denoise_request(setup.model, digit_png(3))
    tally = Tally()
    stop = asyncio.Event()
    deadline = time.monotonic() + warm_s + drain_s + 120
    load = asyncio.gather(
        *(client_loop(server.port, make_request, tally, stop, deadline, stop_when_refused=True) for _ in range(clients))
    )
    await asyncio.sleep(warm_s)
    before = Tally(tally.sent, Counter(tally.answered), tally.lost, tally.refused)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    not_ready_after = None
    while time.monotonic() - signalled < drain_s + 5:
        try:
            if (await get(server.port, "/readyz", timeout=5)).status == 503:
                not_ready_after = time.monotonic() - signalled
                break
        except (OSError, Lost, TimeoutError):
            break
        await asyncio.sleep(0.02)
    exit_code = await asyncio.to_thread(server.process.wait, drain_s + 120)
    exited_after = time.monotonic() - signalled
    stop.set()
    await load
    return {
        "clients": clients,
        "drain_s": drain_s,
        "before_signal": before.summary(),
        "whole_run": tally.summary(),
        "answered_after_signal": sum(tally.answered.values()) - sum(before.answered.values()),
        "lost_after_signal": tally.lost - before.lost,
        "readyz_503_after_s": None if not_ready_after is None else round(not_ready_after, 3),
        "exit_status": exit_code,
        "exited_after_s": round(exited_after, 2),
    }


# -- 6. a worker killed ---------------------------------------------------------------------------------


async def worker_kill(server: Server, setup: Setup, clients: int, warm_s: float, after_s: float) -> dict[str, Any]:
    # One connection per request: the kernel hands new connections to the workers that accept, so the
    # replacement's first requests show when it started to take traffic.
    make_request = denoise_request(setup.model, digit_png(4), keep_alive=False)
    tally = Tally()
    stop = asyncio.Event()
    load = asyncio.gather(
        *(client_loop(server.port, make_request, tally, stop, time.monotonic() + 300) for _ in range(clients))
    )
    await asyncio.sleep(warm_s)
    workers = worker_pids(server.pid)
    victim = workers[0]
    before = Tally(tally.sent, Counter(tally.answered), tally.lost, tally.refused)
    killed_at, killed_wall = time.monotonic(), time.time()
    os.kill(victim, signal.SIGKILL)
    replacement = None
    while replacement is None and time.monotonic() - killed_at < 60:
        await asyncio.sleep(0.1)
        fresh = set(worker_pids(server.pid)) - set(workers)
        replacement = fresh.pop() if fresh else None
    ready_wall = None
    while replacement is not None and ready_wall is None and time.monotonic() - killed_at < 90:
        await asyncio.sleep(0.2)
        for line in server.log_lines():
            if line.get("pid") == replacement and line.get("message", "").startswith("service started"):
                ready_wall = log_time(line)
    ready_at = time.monotonic() if ready_wall is None else killed_at + (ready_wall - killed_wall)

    def served_by_replacement() -> list[float]:
        """When each request the replacement answered began (its log line's time less its duration)."""
        return [
            log_time(line) - line.get("duration_ms", 0.0) / 1000
            for line in server.log_lines()
            if line.get("pid") == replacement and line.get("message") == "request"
        ]

    # Keep the load on until the replacement has served for a while (and at least once, within a minute).
    await asyncio.sleep(after_s)
    while replacement is not None and not served_by_replacement() and time.monotonic() - ready_at < 60:
        await asyncio.sleep(0.2)
    stop.set()
    await load
    # Every answered 200 was counted by the worker that served it; the dead worker's counts stay in the sum.
    counted_200 = await metric_total(server.port, 'route="/v1/denoise"', 'status="200"')
    replacement_requests = served_by_replacement()
    after_kill = [t for t in tally.lost_at if t >= killed_at]
    return {
        "workers": workers,
        "killed": victim,
        "replacement": replacement,
        "replacement_ready_after_s": None if ready_wall is None else round(ready_wall - killed_wall, 2),
        "replacement_requests_served": len(replacement_requests),
        "replacement_first_request_after_ready_s": round(min(replacement_requests) - ready_wall, 3)
        if replacement_requests and ready_wall is not None
        else None,
        "before_kill": before.summary(),
        "whole_run": tally.summary(),
        "lost_seconds_after_kill": [
            (round(t - killed_at, 3), how)
            for t, how in zip(tally.lost_at, tally.lost_how, strict=True)
            if t >= killed_at
        ][:20],
        "metrics_denoise_200_all_workers": counted_200,
        "lost_within_1s_of_kill": sum(1 for t in after_kill if t - killed_at <= 1.0),
        "lost_later": sum(1 for t in after_kill if t - killed_at > 1.0),
        "seconds_after_ready": round(time.monotonic() - ready_at, 1),
    }


# -- 7. the keep-alive race ----------------------------------------------------------------------------


async def keep_alive_race(server: Server, setup: Setup, keep_alive_s: float, tries: int) -> dict[str, Any]:
    """httpx clients (pool expiry 5 s) that wait just under 5 s between two requests on one connection."""
    png = digit_png(5)
    url = f"http://{HOST}:{server.port}/v1/denoise?model={setup.model}"
    errors: Counter[str] = Counter()

    async def one(index: int) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            await client.post(url, content=png, headers={"content-type": "image/png"})
            await asyncio.sleep(4.90 + 0.1 * index / tries)  # 4.90 .. 5.00 s: reused by httpx's pool
            try:
                response = await client.post(url, content=png, headers={"content-type": "image/png"})
                errors[str(response.status_code)] += 1
            except httpx.TransportError as exc:
                errors[f"{type(exc).__name__}: {exc}"[:80]] += 1

    await asyncio.gather(*(one(index) for index in range(tries)))
    return {"server_keep_alive_s": keep_alive_s, "tries": tries, "second_requests": dict(errors)}


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
