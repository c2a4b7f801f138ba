"""The Python client against a real uvicorn process serving tiny checkpoints."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from drawn_digits import decode_png, digit_batch, png_bytes
from PIL import Image

from aeclient import (
    ApiError,
    AsyncClient,
    Client,
    InvalidRequestError,
    ModelNotFoundError,
    OverloadedError,
    ValidationError,
)
from aeclient.images import array_to_image

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return digit_batch(3, seed=11).squeeze(1).numpy()  # (3, 28, 28) floats in [0, 1]


@pytest.fixture
def ae(server: str) -> Iterator[Client]:
    with Client(server) as client:
        yield client


def test_import_does_not_pull_in_torch() -> None:
    code = "import aeclient, aeclient.cli, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_every_input_kind_gives_the_same_answer(ae: Client, digits: np.ndarray, tmp_path: Path) -> None:
    data = png_bytes(digits[0])
    path = tmp_path / "digit.png"
    path.write_bytes(data)
    uint8 = np.asarray(decode_png(data) * 255, dtype=np.uint8).round().astype(np.uint8)
    inputs = [str(path), path, data, Image.open(path), uint8, uint8 / 255.0]
    outputs = [np.asarray(ae.denoise(item)[0]) for item in inputs]
    assert outputs[0].shape == (28, 28)
    for output in outputs[1:]:
        np.testing.assert_array_equal(output, outputs[0])


def test_batches_keep_their_order(ae: Client, digits: np.ndarray) -> None:
    together = ae.denoise(list(digits))
    alone = [ae.denoise(digit)[0] for digit in digits]
    assert len(together) == 3
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the three digits differ, so an answer in the wrong order would fail above
    assert not np.array_equal(np.asarray(together[0]), np.asarray(together[1]))


def test_super_resolve_upscales(ae: Client) -> None:
    small = digit_batch(1, seed=3, size=14).squeeze(1).numpy()[0]
    (upscaled,) = ae.super_resolve(small)
    assert upscaled.size == (28, 28)


def test_reconstruct_returns_images_and_errors(ae: Client, digits: np.ndarray) -> None:
    result = ae.reconstruct(list(digits), model="tiny-ae")
    assert len(result.images) == 3 and result.errors.shape == (3,)
    # the server's error is the mean squared error of what it returned against what it read
    for image, digit, error in zip(result.images, digits, result.errors, strict=True):
        sent = decode_png(png_bytes(digit))
        got = np.asarray(image, dtype=np.float64) / 255
        assert abs(float(np.mean((got - sent) ** 2)) - error) < 5e-3


def test_embeddings_float_and_base64_agree(ae: Client, digits: np.ndarray) -> None:
    exact = ae.embed(list(digits), encoding_format="base64")
    numbers = ae.embed(list(digits), encoding_format="float")
    assert exact.shape == (3, 16) and exact.dtype == np.float32
    np.testing.assert_allclose(exact, numbers, rtol=1e-6, atol=1e-6)
    unit = ae.embed(list(digits), normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(unit, exact / np.linalg.norm(exact, axis=1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_vae_routes(ae: Client, digits: np.ndarray) -> None:
    first = ae.vae_sample(4, seed=5)
    again = ae.vae_sample(4, seed=5)
    assert len(first) == 4
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    posterior = ae.vae_encode(list(digits[:2]))
    assert posterior.mean.shape == (2, 2) and posterior.log_variance.shape == (2, 2)

    decoded = ae.vae_decode(posterior.mean)
    assert len(decoded) == 2 and decoded[0].size == (28, 28)

    path = ae.vae_interpolate(digits[0], digits[1], steps=5)
    assert len(path) == 5
    # the path starts at the first image's posterior mean, so it matches decoding that mean
    np.testing.assert_array_equal(np.asarray(path[0]), np.asarray(decoded[0]))
    assert len(ae.vae_interpolate(latents=[[-1.0, 0.0], [1.0, 0.0]], steps=3)) == 3

    grid = ae.vae_manifold(3, extent=1.5)
    assert grid.size == (3 * 28, 3 * 28)


def test_models_health_ready(ae: Client) -> None:
    names = {card["name"] for card in ae.models()}
    assert {"tiny-ae", "tiny-denoise", "tiny-vae-2d"} <= names
    assert ae.model("tiny-ae")["latent_size"] == 16
    assert ae.health() == {"status": "ok"}
    assert ae.ready()["status"] == "ready"


def test_errors_are_typed_and_carry_the_servers_words(ae: Client, digits: np.ndarray) -> None:
    with pytest.raises(ModelNotFoundError) as not_found:
        ae.denoise(digits[0], model="no-such-model")
    assert not_found.value.status_code == 404 and not_found.value.type == "model_not_found"
    assert "no-such-model" in not_found.value.message

    with pytest.raises(InvalidRequestError) as bad_image:
        ae.denoise(b"this is not an image")
    assert bad_image.value.type == "invalid_image"

    with pytest.raises(ValidationError) as invalid:
        ae.vae_sample(0)
    assert invalid.value.status_code == 422 and invalid.value.param == "n"

    with pytest.raises(InvalidRequestError) as wrong_task:
        ae.super_resolve(digits[0], model="tiny-ae")
    assert wrong_task.value.type == "task_not_supported"


def test_bad_arrays_are_refused_before_sending() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        array_to_image(np.full((4, 4), 2.0))
    with pytest.raises(ValueError, match="shape"):
        array_to_image(np.zeros((1, 28, 28)))  # channels first is not an image layout


async def test_async_client_matches_sync(server: str, ae: Client, digits: np.ndarray) -> None:
    async with AsyncClient(server) as client:
        denoised = await client.denoise(list(digits))
        embedded = await client.embed(list(digits))
        samples = await client.vae_sample(2, seed=9)
        assert (await client.ready())["status"] == "ready"
        with pytest.raises(ModelNotFoundError):
            await client.model("no-such-model")
    for a, b in zip(denoised, ae.denoise(list(digits)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(embedded, ae.embed(list(digits)))
    np.testing.assert_array_equal(np.asarray(samples[1]), np.asarray(ae.vae_sample(2, seed=9)[1]))


# Retries: a busy server is simulated by an httpx transport, since a real one is hard to overload on cue.
def overloaded_then_ok(failures: int, calls: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) <= failures:
            error = {"error": {"type": "overloaded", "message": "queue full", "param": None}}
            return httpx.Response(503, json=error, headers={"Retry-After": "0"})
        return httpx.Response(200, json={"status": "ok"})

    return httpx.MockTransport(handle)


def test_503_with_retry_after_is_retried_a_bounded_number_of_times() -> None:
    calls: list[httpx.Request] = []
    with Client("http://test", transport=overloaded_then_ok(2, calls), api_key="k1") as client:
        assert client.health() == {"status": "ok"}
    assert len(calls) == 3
    assert all(call.headers["Authorization"] == "Bearer k1" for call in calls)

    calls.clear()
    busy_server = overloaded_then_ok(5, calls)
    with Client("http://test", transport=busy_server, max_retries=1) as client, pytest.raises(OverloadedError) as busy:
        client.health()
    assert len(calls) == 2 and busy.value.retry_after == 0 and busy.value.message == "queue full"


def test_503_without_retry_after_and_other_errors_are_not_retried() -> None:
    calls: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, text="down")

    with Client("http://test", transport=httpx.MockTransport(handle)) as client, pytest.raises(ApiError) as down:
        client.health()
    assert len(calls) == 1 and down.value.status_code == 503 and down.value.type == "http_error"


async def test_async_retries() -> None:
    calls: list[httpx.Request] = []
    transport = overloaded_then_ok(1, calls)

    async def handle(request: httpx.Request) -> httpx.Response:
        return transport.handle_request(request)

    async with AsyncClient("http://test", transport=httpx.MockTransport(handle)) as client:
        assert await client.health() == {"status": "ok"}
    assert len(calls) == 2


def test_labels_and_restyle(server: str) -> None:
    digit = png_bytes(digit_batch(1, seed=3)[0])
    with Client(server) as ae:
        sevens = ae.vae_sample(3, seed=4, label=7)
        again = ae.vae_sample(3, seed=4, label=[7, 7, 7])
        assert len(sevens) == 3
        for a, b in zip(sevens, again, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert len(ae.vae_decode([[0.0] * 4, [1.0] * 4], label=[1, 2])) == 2
        restyled = ae.vae_restyle(digit, [0, 5], source_label=3)
        assert len(restyled) == 2 and restyled[0].size == (28, 28)
        assert len(ae.vae_restyle(digit)) == 10
        with pytest.raises(ValidationError) as refused:
            ae.vae_sample(1, label=1, model="tiny-vae-2d")
        assert refused.value.status_code == 422 and refused.value.param == "label"
