"""/v1/embeddings: vectors of the model's size, shaped like the widely used embeddings APIs."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch
from drawn_digits import digit_batch, png_bytes
from fastapi.testclient import TestClient
from service_helpers import b64, multipart, pngs


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return digit_batch(4, seed=55)


def vectors(response: object) -> np.ndarray:
    body = response.json()  # type: ignore[attr-defined]
    return np.array([item["embedding"] for item in body["data"]], dtype=np.float64)


def test_embeddings_have_the_model_size_and_the_usual_shape(client: TestClient, digits: torch.Tensor) -> None:
    response = client.post("/v1/embeddings", files=multipart(*pngs(digits)))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list" and body["model"] == "tiny-ae"
    assert [(item["object"], item["index"]) for item in body["data"]] == [("embedding", i) for i in range(4)]
    model_card = client.get("/v1/models/tiny-ae").json()
    assert vectors(response).shape == (4, model_card["latent_size"]) == (4, 16)
    assert body["usage"] == {"images": 4, "preprocessing": ["none"] * 4}


def test_equal_images_get_equal_embeddings_and_different_ones_differ(client: TestClient, digits: torch.Tensor) -> None:
    # The same image twice in one request, and again alone (a different batch): the same vector.
    together = vectors(client.post("/v1/embeddings", files=multipart(png_bytes(digits[0]), *pngs(digits))))
    alone = vectors(client.post("/v1/embeddings", content=png_bytes(digits[0]), headers={"content-type": "image/png"}))
    np.testing.assert_array_equal(together[0], together[1])
    np.testing.assert_allclose(together[0], alone[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(together[1], together[2])


def test_normalize_gives_unit_vectors_in_the_same_direction(client: TestClient, digits: torch.Tensor) -> None:
    images = [b64(data) for data in pngs(digits)]
    raw = vectors(client.post("/v1/embeddings", json={"images": images}))
    unit = vectors(client.post("/v1/embeddings", json={"images": images, "normalize": True}))
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_base64_encoding_is_little_endian_float32(client: TestClient, digits: torch.Tensor) -> None:
    images = [b64(data) for data in pngs(digits[:2])]
    floats = vectors(client.post("/v1/embeddings", json={"images": images}))
    encoded = client.post("/v1/embeddings", json={"images": images, "encoding_format": "base64"}).json()
    decoded = np.stack([np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in encoded["data"]])
    np.testing.assert_array_equal(decoded, floats.astype(np.float32))


def test_the_model_is_chosen_by_name(client: TestClient, digits: torch.Tensor) -> None:
    response = client.post("/v1/embeddings?model=tiny-vae-2d", files=multipart(png_bytes(digits[0])))
    assert response.json()["model"] == "tiny-vae-2d" and vectors(response).shape == (1, 2)
