"""A short run of the soak schedule (bench/soak/) against the real uvicorn test server: 1,000 mixed
requests, valid and hostile, 16 at a time. The full soak with memory readings is `python -m bench.soak`
(docs/soak.md)."""

from __future__ import annotations

import asyncio

import httpx

from bench.soak import build_schedule, run_schedule

TEST_SERVER_BODY_CAP = 2 * 1024 * 1024  # AE_MAX_BODY_BYTES of the `server` fixture (conftest)
TINY_VAE_LATENT_SIZE = 2  # tiny-vae-2d, the test server's default VAE


def test_a_thousand_mixed_requests_get_the_expected_answers_and_no_5xx(server: str) -> None:
    schedule = build_schedule(1000, seed=1, max_body_bytes=TEST_SERVER_BODY_CAP, latent_size=TINY_VAE_LATENT_SIZE)
    assert {call.valid for call in schedule} == {True, False}
    tally, _, _ = asyncio.run(run_schedule(server, schedule, concurrency=16, max_seconds=240))
    answered = sum(sum(statuses.values()) for statuses in tally.by_kind.values())
    assert answered == len(schedule)
    assert tally.server_errors == 0, tally.by_kind
    assert not tally.transport_errors
    assert not tally.unexpected  # every valid request got a 2xx and every hostile one a 4xx
    assert httpx.get(f"{server}/readyz").status_code == 200
