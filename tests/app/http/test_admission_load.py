"""Admission by expected wait against a real uvicorn process: many well-behaved clients are all served,
and a flood is still shed with fast 503s (app.http.admission)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import httpx
from conftest import running_server
from drawn_digits import digit_batch, png_bytes
from tiny_checkpoints import DEFAULT_MODELS

CLIENTS = 128
REQUESTS_PER_CLIENT = 3


async def closed_loop(base_url: str, clients: int, requests_each: int, body: bytes) -> Counter[int]:
    """`clients` concurrent clients, each sending its next request when the previous one is answered."""
    statuses: Counter[int] = Counter()
    # A connection per request: on a loaded test machine a kept-alive connection can pass uvicorn's idle
    # timeout between two requests and be closed under the client, which says nothing about admission.
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:

        async def one_client() -> None:
            for _ in range(requests_each):
                response = await client.post("/v1/denoise", content=body, headers={"content-type": "image/png"})
                statuses[response.status_code] += 1

        await asyncio.gather(*(one_client() for _ in range(clients)))
    return statuses


def test_128_concurrent_clients_are_all_served(checkpoints_dir: Path) -> None:
    """The old fixed limit (64 requests in flight per model) refused half of these; their expected wait is a
    fraction of a second, far within the deadline, so every one is admitted."""
    body = png_bytes(digit_batch(1, seed=3)[0])
    with running_server(checkpoints_dir, DEFAULT_MODELS) as base_url:
        statuses = asyncio.run(closed_loop(base_url, CLIENTS, REQUESTS_PER_CLIENT, body))
    assert statuses == Counter({200: CLIENTS * REQUESTS_PER_CLIENT})


def test_a_flood_is_still_shed_with_fast_503s_and_retry_after(checkpoints_dir: Path) -> None:
    """Far more requests at once than the model's queue holds: the surplus is refused before its body is
    read, with Retry-After; what is admitted is served; nothing fails otherwise."""
    body = png_bytes(digit_batch(1, seed=4)[0])
    env = {"AE_BATCH_MAX_QUEUE_IMAGES": "32", "AE_BATCH_MAX_SIZE": "32"}
    with running_server(checkpoints_dir, DEFAULT_MODELS, env) as base_url:

        async def flood() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=400, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
                requests = [
                    client.post("/v1/denoise", content=body, headers={"content-type": "image/png"}) for _ in range(400)
                ]
                return list(await asyncio.gather(*requests))

        responses = asyncio.run(flood())
        metrics = httpx.get(f"{base_url}/metrics").text
    statuses = Counter(response.status_code for response in responses)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0 and statuses[200] >= 32, statuses
    refused = next(response for response in responses if response.status_code == 503)
    assert int(refused.headers["retry-after"]) >= 1
    assert json.loads(refused.content)["error"]["type"] == "overloaded"
    assert 'status="503"' in metrics
