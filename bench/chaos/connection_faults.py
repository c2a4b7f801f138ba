"""The faults at the connections: slow headers (1), admission keyed by made-up names (3), clients gone in
the middle of their body (4) and the keep-alive race (7)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from contextlib import suppress
from typing import Any

import httpx
import numpy as np

from bench.chaos.clients import (
    HOST,
    Answer,
    Lost,
    Tally,
    client_loop,
    digit_png,
    get,
    http_request,
    made_up_name_request,
)
from bench.chaos.server import Server, Setup, open_fds, rss_mib

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
