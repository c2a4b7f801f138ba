"""The faults in the server's life: a checkpoint swapped under load (2), the drain on SIGTERM (5) and a
worker killed (6)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import torch

from bench.chaos.clients import ADMIN_KEY, HOST, Lost, Tally, client_loop, denoise_request, digit_png, get, read_answer
from bench.chaos.connection_faults import metric_total
from bench.chaos.server import Server, Setup, log_time, worker_pids
from models.checkpoint import load_checkpoint, save_checkpoint

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
