"""The service as a real `python -m uvicorn app.main:app` process on a free port, over real HTTP."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from drawn_digits import decode_png, digit_batch, digit_photo, png_bytes
from service_helpers import assert_error, json_images, multipart, pngs


def test_ready_and_healthy(server: str) -> None:
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_curl_style_denoise_returns_png_bytes(server: str) -> None:
    digit = png_bytes(digit_batch(1, seed=21)[0])
    response = httpx.post(f"{server}/v1/denoise", files=multipart(digit), headers={"x-request-id": "server-1"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-request-id"] == "server-1"
    assert decode_png(response.content).shape == (28, 28)


def test_photo_embeddings_and_samples_over_http(server: str) -> None:
    photo = httpx.post(f"{server}/v1/reconstruct", content=digit_photo(5), headers={"content-type": "image/jpeg"})
    assert photo.status_code == 200 and photo.headers["x-preprocessing"] == "mnist-frame"
    images = [base64.b64encode(data).decode() for data in pngs(digit_batch(2, seed=22))]
    embeddings = httpx.post(f"{server}/v1/embeddings", json={"images": images + images[:1]}).json()["data"]
    assert len(embeddings[0]["embedding"]) == 16 and embeddings[0]["embedding"] == embeddings[2]["embedding"]
    first = httpx.post(f"{server}/v1/vae/sample", json={"n": 3, "seed": 9}).json()
    again = httpx.post(f"{server}/v1/vae/sample", json={"n": 3, "seed": 9}).json()
    assert first["data"] == again["data"]
    grid = httpx.get(f"{server}/v1/vae/manifold", params={"size": 4, "range": 2})
    assert decode_png(grid.content).shape == (112, 112)


def test_concurrent_requests_each_get_their_own_answer(server: str) -> None:
    """Requests sent at once share forward passes; each must still get exactly its own outputs."""
    digits = pngs(digit_batch(12, seed=23))
    url = f"{server}/v1/denoise?response_format=json"
    alone = [json_images(httpx.post(url, files=multipart(data)))[0] for data in digits]

    def send(data: bytes) -> np.ndarray:
        response = httpx.post(f"{server}/v1/denoise?response_format=json", files=multipart(data), timeout=30)
        return json_images(response)[0]

    with ThreadPoolExecutor(max_workers=12) as pool:
        together = list(pool.map(send, digits))
    for mine, reference in zip(together, alone, strict=True):
        assert np.abs(mine - reference).max() <= 1 / 255  # batch size may change float rounding, not results
    assert 'ae_batch_size_count{batcher="tiny-denoise/denoise"}' in httpx.get(f"{server}/metrics").text


def test_errors_over_http(server: str) -> None:
    assert_error(httpx.post(f"{server}/v1/denoise?model=nope", files=multipart(b"x")), 404, "model_not_found")
    too_big = httpx.post(
        f"{server}/v1/denoise", content=b"\x00" * (2 * 1024 * 1024 + 1), headers={"content-type": "image/png"}
    )
    assert_error(too_big, 413, "payload_too_large")
    assert_error(httpx.post(f"{server}/v1/denoise", content=b"x", headers={"content-type": "text/plain"}), 415)
    assert_error(httpx.post(f"{server}/v1/vae/sample", json={"n": 0}), 422, "validation_error")
