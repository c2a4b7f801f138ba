"""Faults inside a model: an exception or an out-of-memory error fails that batch only, with a 503."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from drawn_digits import digit_batch, png_bytes
from fastapi.testclient import TestClient
from service_helpers import assert_error, multipart

DIGIT = png_bytes(digit_batch(1, seed=4)[0])


@pytest.fixture
def flaky(make_client: Callable[..., TestClient]) -> Iterator[tuple[TestClient, list[BaseException]]]:
    """A started app whose denoiser raises the next error queued in the list, then works again."""
    client = make_client()
    model = client.app.state.registry.entries["tiny-denoise"].loaded.model  # type: ignore[attr-defined]
    errors: list[BaseException] = []

    def maybe_fail(module: torch.nn.Module, inputs: object) -> None:
        if errors:
            raise errors.pop(0)

    # A hook on the model's first layer: inside the forward pass, whatever method the batcher calls.
    first_layer = next(module for module in model.modules() if not list(module.children()))
    handle = first_layer.register_forward_pre_hook(maybe_fail)
    yield client, errors
    handle.remove()


def test_an_exception_in_the_model_is_a_503_model_error_and_the_next_request_works(
    flaky: tuple[TestClient, list[BaseException]],
) -> None:
    client, errors = flaky
    errors.append(RuntimeError("secret internal detail"))
    error = assert_error(client.post("/v1/denoise", files=multipart(DIGIT)), 503, "model_error")
    assert "secret internal detail" not in error["message"]  # the type is named, internals are logged only
    assert client.post("/v1/denoise", files=multipart(DIGIT)).status_code == 200
    assert client.get("/readyz").status_code == 200


def test_out_of_device_memory_is_a_503_and_the_service_goes_on(flaky: tuple[TestClient, list[BaseException]]) -> None:
    client, errors = flaky
    errors.append(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    response = client.post("/v1/denoise", files=multipart(DIGIT))
    assert_error(response, 503, "out_of_memory")
    assert response.headers["retry-after"] == "1"
    assert client.post("/v1/denoise", files=multipart(DIGIT)).status_code == 200
    assert client.get("/readyz").status_code == 200


def test_a_failing_model_does_not_fail_other_models(flaky: tuple[TestClient, list[BaseException]]) -> None:
    client, errors = flaky
    errors.extend([RuntimeError("broken")] * 3)
    assert_error(client.post("/v1/denoise", files=multipart(DIGIT)), 503, "model_error")
    assert client.post("/v1/embeddings", files=multipart(DIGIT)).status_code == 200
    assert client.post("/v1/vae/sample", json={"n": 2}).status_code == 200
