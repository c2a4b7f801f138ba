"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis), in-process over ASGI.

For every operation in /openapi.json, schemathesis generates requests: valid ones, ones that break the
schema (wrong types, unknown fields, missing bodies, other methods and content types) and, for the raw
`image/*` bodies, real little PNG/JPEG/GIF/WebP files. Every response is checked for:

- no 5xx (not_a_server_error);
- a status code that the schema documents for that route (status_code_conformance);
- a documented content type (content_type_conformance) and a body matching its schema
  (response_schema_conformance): every error is the documented `{"error": {...}}` shape;
- a 4xx for every request that breaks the schema (negative_data_rejection).

`positive_data_acceptance` is left out on purpose: a schema cannot say "a decodable 14x14 image" or
"two latents of the model's latent size", so requests that are valid by the schema are refused, rightly,
with a 400 or 422 (e.g. a 28x28 PNG sent to the x2 super-resolution model, which reads 14x14 only).

The run is bounded and derandomised, so it sends the same requests each time: about 950 "coverage" cases
(every documented status, boundary values, other methods, missing and extra parts) plus up to 40
generated examples per operation, about 1,450 requests in 10 s on 2 cores (plus the tiny checkpoints).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from conftest import make_settings
from drawn_digits import digit_batch, png_bytes
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app

ADMIN_KEY = "fuzz-admin-key-0123456789"
API_KEY = "fuzz-api-key-9876543210"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
BOUNDED = settings(
    max_examples=40,  # per operation, on top of schemathesis's own coverage cases (methods, edge values)
    deadline=None,  # no timing assertions: the machine is shared and noisy
    derandomize=True,  # the same requests every run, so a failure reproduces
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzzed_app(checkpoints_dir: Path) -> FastAPI:
    # The admin key mounts the management routes (load, unload, reload), so they are fuzzed too.
    # schemathesis starts the app's lifespan on first use and keeps it running until the process exits.
    return create_app(make_settings(checkpoints_dir, admin_api_key=ADMIN_KEY, torch_threads=1))


@pytest.fixture(scope="module")
def api_schema(fuzzed_app: FastAPI) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


@pytest.fixture(scope="module")
def keyed_schema(checkpoints_dir: Path) -> schemathesis.BaseSchema:
    """API keys switched on, and requests sent without one: every /v1 answer must be a documented 401."""
    keyed = make_settings(checkpoints_dir, api_keys=[API_KEY], admin_api_key=ADMIN_KEY, torch_threads=1)
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(keyed))


open_schema = schemathesis.pytest.from_fixture("api_schema")
keyed_lazy_schema = schemathesis.pytest.from_fixture("keyed_schema")


@open_schema.parametrize()
@BOUNDED
def test_every_response_conforms_to_the_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN_KEY}"}, checks=CHECKS)


@keyed_lazy_schema.include(path_regex="^/v1/").parametrize()
@settings(BOUNDED, max_examples=5)
def test_without_a_key_every_v1_route_answers_a_documented_401(case: schemathesis.Case) -> None:
    response = case.call_and_validate(checks=CHECKS)
    # A route the method is not allowed on answers 405 before the key is looked at; nothing else gets through.
    assert response.status_code in (401, 405), response.text[:200]


def test_the_service_still_serves_after_the_fuzzing(api_schema: schemathesis.BaseSchema) -> None:
    """Through the same in-process app the fuzzing used: alive, and a real denoise still works."""
    health = api_schema["/healthz"]["GET"].Case().call()
    assert health.status_code == 200
    digit = png_bytes(digit_batch(1, seed=11)[0])
    denoise = api_schema["/v1/denoise"]["POST"].Case(body=digit, media_type="image/png")
    response = denoise.call_and_validate(headers={"Authorization": f"Bearer {ADMIN_KEY}"}, checks=CHECKS)
    assert response.status_code == 200
    assert response.headers["content-type"] == ["image/png"]  # schemathesis lists every value of a header
    assert response.content.startswith(b"\x89PNG")
