"""/v1/vae/*: sampling by seed, decoding, encoding, interpolation and the manifold grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from drawn_digits import decode_png, digit_batch
from fastapi.testclient import TestClient
from service_helpers import assert_error, b64, json_images, multipart, pngs


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return digit_batch(2, seed=77)


def test_the_same_seed_gives_the_same_images(client: TestClient) -> None:
    first = client.post("/v1/vae/sample", json={"n": 4, "seed": 123})
    again = client.post("/v1/vae/sample", json={"n": 4, "seed": 123})
    other = client.post("/v1/vae/sample", json={"n": 4, "seed": 124})
    assert first.status_code == 200 and first.json()["seed"] == 123
    images = json_images(first)
    assert len(images) == 4 and images[0].shape == (28, 28)
    assert [item["b64_png"] for item in first.json()["data"]] == [item["b64_png"] for item in again.json()["data"]]
    assert not all(np.array_equal(a, b) for a, b in zip(images, json_images(other), strict=True))
    assert not np.array_equal(images[0], images[1])  # n different draws, not one image n times


def test_without_a_seed_the_chosen_seed_is_returned_and_reproduces(client: TestClient) -> None:
    first = client.post("/v1/vae/sample", json={"n": 2}).json()
    again = client.post("/v1/vae/sample", json={"n": 2, "seed": first["seed"]}).json()
    assert [d["b64_png"] for d in first["data"]] == [d["b64_png"] for d in again["data"]]


def test_temperature_zero_decodes_the_prior_mean(client: TestClient) -> None:
    cold = json_images(client.post("/v1/vae/sample", json={"n": 2, "seed": 5, "temperature": 0}))
    origin = json_images(client.post("/v1/vae/decode", json={"latents": [[0.0, 0.0]]}))[0]
    assert np.array_equal(cold[0], origin) and np.array_equal(cold[1], origin)


def test_samples_as_one_png_grid(client: TestClient) -> None:
    response = client.post("/v1/vae/sample", json={"n": 4, "seed": 1, "response_format": "png"})
    assert response.headers["content-type"] == "image/png" and response.headers["x-grid"] == "2x2"
    assert response.headers["x-seed"] == "1"
    assert decode_png(response.content).shape == (56, 56)


def test_decode_checks_the_latent_size(client: TestClient) -> None:
    response = client.post("/v1/vae/decode", json={"latents": [[0.5, -0.5], [1.0, 1.0]]})
    assert response.status_code == 200 and len(json_images(response)) == 2
    error = assert_error(client.post("/v1/vae/decode", json={"latents": [[0.5, -0.5, 1.0]]}), 422, "validation_error")
    assert error["param"] == "latents" and "2 latent dimensions" in error["message"]


def test_encode_returns_means_and_log_variances(client: TestClient, digits: torch.Tensor) -> None:
    response = client.post("/v1/vae/encode", files=multipart(*pngs(digits)))
    assert response.status_code == 200
    data = response.json()["data"]
    assert len(data) == 2 and all(len(item["mean"]) == len(item["log_variance"]) == 2 for item in data)
    assert data[0]["mean"] != data[1]["mean"]


def test_interpolating_latents_starts_and_ends_at_them(client: TestClient) -> None:
    start, end = [-1.0, 0.5], [1.5, -1.0]
    path = json_images(client.post("/v1/vae/interpolate", json={"latents": [start, end], "steps": 5}))
    ends = json_images(client.post("/v1/vae/decode", json={"latents": [start, end]}))
    assert len(path) == 5
    assert np.array_equal(path[0], ends[0]) and np.array_equal(path[-1], ends[1])


def test_interpolating_two_images_goes_between_their_means(client: TestClient, digits: torch.Tensor) -> None:
    means = [item["mean"] for item in client.post("/v1/vae/encode", files=multipart(*pngs(digits))).json()["data"]]
    by_images = client.post("/v1/vae/interpolate?steps=3", files=multipart(*pngs(digits)))
    by_json = client.post("/v1/vae/interpolate", json={"images": [b64(d) for d in pngs(digits)], "steps": 3})
    by_latents = client.post("/v1/vae/interpolate", json={"latents": means, "steps": 3})
    assert by_images.status_code == 200
    images = json_images(by_images)
    assert len(images) == 3
    for other in (json_images(by_json), json_images(by_latents)):
        assert all(np.abs(a - b).max() <= 1 / 255 for a, b in zip(images, other, strict=True))


def test_interpolation_needs_exactly_two_endpoints(client: TestClient, digits: torch.Tensor) -> None:
    assert_error(client.post("/v1/vae/interpolate", files=multipart(*pngs(digits[:1]))), 400, "invalid_request")
    assert_error(client.post("/v1/vae/interpolate", json={"steps": 3}), 400, "invalid_request")
    assert_error(client.post("/v1/vae/interpolate", json={"latents": [[0, 0]]}), 422, "validation_error")


@pytest.mark.parametrize("size", [1, 5])
def test_the_manifold_grid_has_the_requested_size(client: TestClient, size: int) -> None:
    response = client.get(f"/v1/vae/manifold?size={size}&range=1.5")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-grid"] == f"{size}x{size}"
    assert decode_png(response.content).shape == (28 * size, 28 * size)


def test_the_manifold_tiles_are_decodings_of_the_grid_points(client: TestClient) -> None:
    grid = decode_png(client.get("/v1/vae/manifold?size=3&range=2").content)
    # Top-left tile: z1 = -range (left), z2 = +range (top); bottom-right: z1 = +range, z2 = -range.
    corners = json_images(client.post("/v1/vae/decode", json={"latents": [[-2.0, 2.0], [2.0, -2.0]]}))
    assert np.array_equal(grid[:28, :28], corners[0]) and np.array_equal(grid[-28:, -28:], corners[1])


def test_the_manifold_needs_a_two_dimensional_latent_space(client: TestClient) -> None:
    error = assert_error(client.get("/v1/vae/manifold?model=tiny-vae-3d&size=3"), 400, "task_not_supported")
    assert "2-D" in error["message"]


@pytest.mark.parametrize(
    "latents",
    [[[1e300, 0.0]], [[1000.5, 0.0]], [[0.0, -3e38]], [[]], [[0.0] * 4097]],
    ids=["overflows-float32", "over-1000", "float32-max", "empty", "too-long"],
)
def test_absurd_latents_are_refused_not_decoded_into_blank_images(client: TestClient, latents: list) -> None:
    for route, body in (("/v1/vae/decode", {"latents": latents}), ("/v1/vae/interpolate", {"latents": latents * 2})):
        error = assert_error(client.post(route, json=body), 422, "validation_error")
        assert error["param"].startswith("latents"), error


def test_latents_up_to_the_limit_are_decoded(client: TestClient) -> None:
    response = client.post("/v1/vae/decode", json={"latents": [[1000.0, -1000.0]]})
    assert response.status_code == 200 and len(json_images(response)) == 1
