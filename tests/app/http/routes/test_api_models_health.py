"""Model listing, readiness, metrics, the request id and the access log."""

from __future__ import annotations

import datetime
import io
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from drawn_digits import digit_batch, png_bytes
from fastapi.testclient import TestClient
from service_helpers import assert_error, multipart
from tiny_checkpoints import TINY_AE_FINISHED_AT

from app.main import create_app
from app.observability import JsonFormatter
from app.settings import Settings
from models.checkpoint import read_card
from models.runtime.execution import native_precisions

DIGIT = png_bytes(digit_batch(1, seed=3)[0])


def test_models_lists_every_checkpoint_with_its_card(client: TestClient, checkpoints_dir: Path) -> None:
    response = client.get("/v1/models")
    assert response.status_code == 200
    models = {item["name"]: item for item in response.json()["data"]}
    assert set(models) == {
        "tiny-ae", "tiny-denoise", "tiny-sr-x2", "tiny-vae-2d", "tiny-vae-3d", "tiny-cvae", "broken", "broken-card",
        "mismatch",
    }  # fmt: skip
    sr = models["tiny-sr-x2"]
    card = read_card(checkpoints_dir / "tiny-sr-x2")
    assert sr["tasks"] == ["super-resolve"] and sr["scale"] == 2 and sr["architecture"] == "sr-autoencoder"
    assert sr["input"] == {"channels": 1, "height": 14, "width": 14, "domain": "mnist"}
    assert sr["sha256"] == card.weights_sha256 and sr["metrics"] == card.metrics
    assert sr["device"] == "cpu" and sr["dtype"] == "float32" and sr["state"] == "loaded"
    plan = sr["execution"]  # the execution plan chosen when it loaded (models.runtime.execution)
    assert plan["precision"] == "float32"  # the tiny cards carry no quality guard: no reduced precision
    assert plan["memory_format"] in ("channels_last", "contiguous") and plan["compiled"] is False
    assert plan["batch_norm_folded"] == 0 and plan["threads"] >= 1 and plan["prepare_seconds"] > 0
    assert set(plan["measured_images_per_s"]) >= {"float32 contiguous", "float32 channels_last"}
    if "bfloat16" in native_precisions(torch.device("cpu")):  # a candidate here: the plan says why it lost
        assert "bfloat16 not used: the model card has no quality measurement for bfloat16" in " ".join(plan["reasons"])
    else:  # not native here: never a candidate, never measured
        assert not any("bfloat16" in name for name in plan["measured_images_per_s"])
    assert models["tiny-vae-3d"]["state"] == "not_loaded"  # not a default: loaded on first use
    assert models["tiny-vae-3d"]["execution"] is None and models["tiny-vae-3d"]["dtype"] is None
    assert models["tiny-vae-3d"]["latent_size"] == 3


def test_models_are_openai_model_objects_too(client: TestClient, make_client: Callable[..., TestClient]) -> None:
    listed = client.get("/v1/models").json()["data"]
    assert [item["id"] for item in listed] == [item["name"] for item in listed]
    assert {item["object"] for item in listed} == {"model"}
    assert {item["owned_by"] for item in listed} == {"ae-service"}  # the setting's default
    created = {item["id"]: item["created"] for item in listed}
    # tiny-ae's card says when it was trained; the other cards do not (nor can a card that is not JSON).
    assert created.pop("tiny-ae") == int(datetime.datetime.fromisoformat(TINY_AE_FINISHED_AT).timestamp())
    assert set(created.values()) == {0}
    one = client.get("/v1/models/tiny-ae").json()
    assert one == next(item for item in listed if item["id"] == "tiny-ae")
    assert make_client(owned_by="lab-7").get("/v1/models/tiny-sr-x2").json()["owned_by"] == "lab-7"


def test_a_broken_checkpoint_is_listed_unavailable_and_the_others_serve(client: TestClient) -> None:
    digit = png_bytes(digit_batch(1, seed=3)[0])
    broken = client.get("/v1/models/broken").json()  # found out at start-up, before any use
    assert broken["state"] == "unavailable" and "sha256 mismatch" in broken["reason"]
    assert_error(client.post("/v1/reconstruct?model=broken", files=multipart(digit)), 503, "model_unavailable")
    assert client.post("/v1/reconstruct", files=multipart(digit)).status_code == 200


def test_a_model_card_that_is_not_json_is_listed_unavailable(client: TestClient) -> None:
    broken = client.get("/v1/models/broken-card").json()
    assert broken["state"] == "unavailable" and "invalid model card" in broken["reason"] and broken["tasks"] == []
    assert_error(client.get("/v1/vae/manifold?model=broken-card"), 503, "model_unavailable")


def test_a_model_that_fails_its_warm_up_pass_is_unavailable(make_client: Callable[..., TestClient]) -> None:
    service = make_client(default_models={"denoise": "mismatch"})
    assert "warm-up forward pass failed" in service.get("/v1/models/mismatch").json()["reason"]
    assert "mismatch" in " ".join(service.get("/readyz").json()["reasons"])
    assert_error(service.post("/v1/denoise?model=mismatch", files=multipart(DIGIT)), 503, "model_unavailable")


def test_an_unknown_model_is_a_404(client: TestClient) -> None:
    error = assert_error(client.get("/v1/models/nope"), 404, "model_not_found")
    assert "tiny-ae" in error["message"]  # it names what exists


def test_models_not_preloaded_load_on_first_use(make_client: Callable[..., TestClient]) -> None:
    lazy = make_client(preload="none")
    assert lazy.get("/v1/models/tiny-vae-3d").json()["state"] == "not_loaded"
    assert lazy.post("/v1/vae/sample?model=tiny-vae-3d", json={"n": 1, "seed": 0}).status_code == 200
    assert lazy.get("/v1/models/tiny-vae-3d").json()["state"] == "loaded"


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert ready.json()["models"]["tiny-denoise"] == "loaded"


def test_not_ready_when_a_default_model_is_broken_or_missing(make_client: Callable[..., TestClient]) -> None:
    defaults = {"denoise": "broken", "embed": "missing-model"}
    unready = make_client(default_models=defaults | {"manifold": "tiny-vae-2d", "vae": "tiny-vae-2d"})
    response = unready.get("/readyz")
    assert response.status_code == 503 and response.json()["status"] == "not_ready"
    reasons = " ".join(response.json()["reasons"])
    assert "'broken' is unavailable" in reasons and "'missing-model' is not in" in reasons
    # The models that work still serve.
    assert unready.post("/v1/vae/sample", json={"n": 1}).status_code == 200


def test_requests_before_start_up_are_refused_as_not_ready(settings: Settings) -> None:
    unstarted = TestClient(create_app(settings), raise_server_exceptions=False)  # lifespan not run
    assert_error(unstarted.post("/v1/vae/sample", json={"n": 1}), 503, "not_ready")
    assert unstarted.get("/readyz").status_code == 503


def test_metrics_count_requests_stages_and_batches(client: TestClient) -> None:
    client.post("/v1/denoise", files=multipart(png_bytes(digit_batch(1, seed=2)[0])))
    text = client.get("/metrics").text
    assert 'ae_requests_total{method="POST",route="/v1/denoise",status="200"}' in text
    assert 'ae_request_duration_seconds_bucket{le="0.001",method="POST",route="/v1/denoise",status="200"}' in text
    for stage in ("decode", "queue", "model", "encode"):
        assert re.search(rf'ae_stage_duration_seconds_count{{name="[^"]+",stage="{stage}"}} [1-9]', text), stage
    assert 'ae_batch_size_count{batcher="tiny-denoise/denoise"}' in text
    assert 'ae_batcher_queue_depth{batcher="tiny-denoise/denoise"} 0.0' in text


@pytest.mark.parametrize(
    ("incoming", "echoed"),
    [("abc-123_X.y:z", True), ("bad id with spaces", False), ("x" * 200, False), (None, False)],
)
def test_request_id_header(client: TestClient, incoming: str | None, echoed: bool) -> None:
    headers = {"x-request-id": incoming} if incoming else {}
    returned = client.get("/healthz", headers=headers).headers["x-request-id"]
    if echoed:
        assert returned == incoming
    else:
        assert returned != incoming and len(returned) == 32  # a fresh uuid4 hex


def test_one_structured_log_line_per_request(client: TestClient) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("app.access")
    access.addHandler(handler)
    try:
        digits = [png_bytes(image) for image in digit_batch(2, seed=9)]
        client.post("/v1/denoise", files=multipart(*digits), headers={"x-request-id": "log-test-1"})
        client.get("/v1/models/nope", headers={"x-request-id": "log-test-2"})
    finally:
        access.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["request_id"] == "log-test-1" and first["route"] == "/v1/denoise" and first["method"] == "POST"
    assert first["model"] == "tiny-denoise" and first["images"] == 2 and first["status"] == 200
    assert isinstance(first["duration_ms"], float) and first["level"] == "info"
    assert second["route"] == "/v1/models/{name}" and second["status"] == 404
    assert second["error_type"] == "model_not_found"


def test_openapi_documents_every_route_and_the_three_image_inputs(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    expected = {
        "/healthz", "/readyz", "/metrics", "/v1/models", "/v1/models/{name}", "/v1/denoise", "/v1/super-resolve",
        "/v1/reconstruct", "/v1/embeddings", "/v1/vae/sample", "/v1/vae/decode", "/v1/vae/encode",
        "/v1/vae/interpolate", "/v1/vae/manifold",
    }  # fmt: skip
    assert expected <= set(paths)
    content = paths["/v1/denoise"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/*", "application/json"} <= set(content)
    assert client.get("/docs").status_code == 200
