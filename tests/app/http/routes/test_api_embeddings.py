"""/v1/embeddings: vectors of the model's size, shaped like the widely used embeddings APIs."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from drawn_digits import digit_batch, png_bytes
from fastapi.testclient import TestClient
from service_helpers import assert_error, b64, multipart, pngs, quantised

from models.checkpoint import load_checkpoint


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


# -- OpenAI's request shape (the SDK and LangChain against a real server: test_openai_clients.py) ----------


def test_openai_input_is_read_like_images(client: TestClient, digits: torch.Tensor) -> None:
    images = [b64(data) for data in pngs(digits)]
    expected = vectors(client.post("/v1/embeddings", json={"images": images}))
    as_list = client.post("/v1/embeddings", json={"model": "tiny-ae", "input": images})
    np.testing.assert_allclose(vectors(as_list), expected, rtol=1e-5, atol=1e-6)
    one = client.post("/v1/embeddings", json={"input": f"data:image/png;base64,{images[2]}", "user": "u-1"})
    np.testing.assert_allclose(vectors(one), expected[2:3], rtol=1e-5, atol=1e-6)


def test_openai_usage_keys_come_only_with_input(client: TestClient, digits: torch.Tensor) -> None:
    images = [b64(data) for data in pngs(digits[:3])]
    openai_usage = client.post("/v1/embeddings", json={"input": images}).json()["usage"]
    assert openai_usage == {"images": 3, "preprocessing": ["none"] * 3, "prompt_tokens": 3, "total_tokens": 3}
    own_usage = client.post("/v1/embeddings", json={"images": images}).json()["usage"]
    assert own_usage == {"images": 3, "preprocessing": ["none"] * 3}  # as before: existing callers see no change


def test_images_and_input_together_are_refused_naming_both(client: TestClient, digits: torch.Tensor) -> None:
    image = b64(png_bytes(digits[0]))
    error = assert_error(client.post("/v1/embeddings", json={"images": [image], "input": [image]}), 422)
    assert error["param"] == "input" and "'images'" in error["message"] and "'input'" in error["message"]


@pytest.mark.parametrize("value", [[1, 2, 3], [[1, 2]], 7, {"image": "x"}, ["ok", 5]])
def test_input_that_is_not_base64_text_is_a_422(client: TestClient, value: object) -> None:
    error = assert_error(client.post("/v1/embeddings", json={"input": value}), 422, "validation_error")
    assert error["param"] == "input"


def test_bad_input_images_are_named_as_the_client_sent_them(client: TestClient, digits: torch.Tensor) -> None:
    good = b64(png_bytes(digits[0]))
    listed = assert_error(client.post("/v1/embeddings", json={"input": [good, "@@@"]}), 400, "invalid_image")
    assert listed["param"] == "input[1]" and "base64" in listed["message"]
    bare = assert_error(client.post("/v1/embeddings", json={"input": b64(b"no image")}), 400, "invalid_image")
    assert bare["param"] == "input"
    assert_error(client.post("/v1/embeddings", json={"input": []}), 400, "invalid_request")


def test_input_has_the_image_count_limit(make_client: Callable[..., TestClient], digits: torch.Tensor) -> None:
    limited = make_client(max_images_per_request=3)
    error = assert_error(limited.post("/v1/embeddings", json={"input": [b64(png_bytes(digits[0]))] * 4}), 413)
    assert error["param"] == "input" and "limit is 3" in error["message"]


def test_input_is_an_embeddings_field_only(client: TestClient, digits: torch.Tensor) -> None:
    error = assert_error(client.post("/v1/denoise", json={"input": [b64(png_bytes(digits[0]))]}), 422)
    assert "input" in error["message"]


def test_dimensions_must_be_the_models_size(client: TestClient, digits: torch.Tensor) -> None:
    image = b64(png_bytes(digits[0]))
    assert vectors(client.post("/v1/embeddings", json={"input": image, "dimensions": 16})).shape == (1, 16)
    error = assert_error(client.post("/v1/embeddings", json={"input": image, "dimensions": 8}), 422)
    assert error["param"] == "dimensions" and "16" in error["message"]
    # From a form or the query too, and for the model named
    form = client.post(
        "/v1/embeddings?model=tiny-vae-2d", files=multipart(png_bytes(digits[0])), data={"dimensions": "3"}
    )
    assert "2" in assert_error(form, 422)["message"]
    assert_error(client.post("/v1/embeddings?dimensions=0", json={"input": image}), 422)


def test_embeddings_are_the_model_s_own_embed_of_the_pixels_sent(
    client: TestClient, digits: torch.Tensor, checkpoints_dir: Path
) -> None:
    """The vectors are what the checkpoint's own `embed` gives on the decoded pixels (not merely
    self-consistent): the served plan (float32 for the tiny cards, which carry no guard) changes only rounding."""
    served = vectors(client.post("/v1/embeddings", files=multipart(*pngs(digits))))
    model = load_checkpoint(checkpoints_dir / "tiny-ae").model
    sent = torch.from_numpy(quantised(digits)).float()[:, None]  # what the server decoded from the PNGs
    with torch.inference_mode():
        expected = model.embed(sent).double().numpy()  # type: ignore[operator]
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(served[0], served[1])  # and the digits differ, so the match is no accident
