"""/v1/denoise, /v1/super-resolve and /v1/reconstruct in-process: real outputs, every input and output format."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from drawn_digits import decode_png, digit_batch, digit_photo, png_bytes, render_digit
from fastapi.testclient import TestClient
from PIL import Image
from service_helpers import b64, json_images, mse, multipart, pngs, quantised
from tiny_checkpoints import NOISE_SIGMA

from models.data.corruptions import downscale, gaussian_noise, upscale


@pytest.fixture(scope="module")
def clean() -> torch.Tensor:
    return digit_batch(10, seed=1234)  # digits the tiny models never saw: (10, 1, 28, 28)


def test_denoised_digits_are_closer_to_the_clean_digits_than_the_noisy_input(
    client: TestClient, clean: torch.Tensor
) -> None:
    noisy = gaussian_noise(clean, NOISE_SIGMA, seed=7)
    response = client.post("/v1/denoise", files=multipart(*pngs(noisy)))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"  # several images in -> JSON
    denoised = np.stack(json_images(response))
    targets, inputs = quantised(clean), quantised(noisy)
    assert denoised.shape == targets.shape == (10, 28, 28)
    noisy_error, denoised_error = mse(inputs, targets), mse(denoised, targets)
    assert denoised_error < 0.7 * noisy_error, (denoised_error, noisy_error)
    assert denoised_error < mse(np.zeros_like(targets), targets)  # not just a blank answer
    body = response.json()
    assert body["model"] == "tiny-denoise" and [item["index"] for item in body["data"]] == list(range(10))
    assert all(item["preprocessing"] == "none" and item["width"] == item["height"] == 28 for item in body["data"])


def test_super_resolution_returns_the_right_size_and_beats_bicubic(client: TestClient, clean: torch.Tensor) -> None:
    low = downscale(clean, 2, "area")  # (10, 1, 14, 14)
    response = client.post("/v1/super-resolve", json={"images": [b64(data) for data in pngs(low)]})
    assert response.status_code == 200
    outputs = np.stack(json_images(response))
    assert outputs.shape == (10, 28, 28)
    sent = torch.from_numpy(quantised(low)).unsqueeze(1)  # what the server received
    bicubic = upscale(sent, 2, "bicubic").squeeze(1).numpy()
    targets = quantised(clean)
    assert mse(outputs, targets) < mse(bicubic, targets)


def test_one_image_by_multipart_comes_back_as_png_bytes_pixel_aligned(client: TestClient, clean: torch.Tensor) -> None:
    response = client.post("/v1/denoise", files=multipart(png_bytes(clean[0])))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-preprocessing"] == "none" and response.headers["x-model"] == "tiny-denoise"
    assert decode_png(response.content).shape == (28, 28)


def test_one_raw_image_body_comes_back_as_png(client: TestClient, clean: torch.Tensor) -> None:
    low = downscale(clean[:1], 2, "area")[0]
    response = client.post("/v1/super-resolve", content=png_bytes(low), headers={"content-type": "image/png"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert decode_png(response.content).shape == (28, 28)


def test_json_input_answers_json_even_for_one_image(client: TestClient, clean: torch.Tensor) -> None:
    response = client.post("/v1/denoise", json={"images": [b64(png_bytes(clean[0]))]})
    assert response.headers["content-type"] == "application/json"
    assert len(response.json()["data"]) == 1


def test_response_format_overrides_the_default(client: TestClient, clean: torch.Tensor) -> None:
    one = client.post("/v1/denoise?response_format=json", files=multipart(png_bytes(clean[0])))
    assert one.headers["content-type"] == "application/json"
    # Several images as png: one grid, row-major, the most nearly square layout.
    grid = client.post("/v1/denoise", data={"response_format": "png"}, files=multipart(*pngs(clean[:3])))
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    assert grid.headers["x-grid"] == "2x2"
    pixels = decode_png(grid.content)
    assert pixels.shape == (56, 56)
    separately = json_images(client.post("/v1/denoise", files=multipart(*pngs(clean[:3]))))
    assert np.array_equal(pixels[:28, 28:], separately[1]) and np.array_equal(pixels[28:, :28], separately[2])
    assert pixels[28:, 28:].max() == 0  # the empty fourth cell


def test_options_can_be_multipart_fields(client: TestClient, clean: torch.Tensor) -> None:
    fields = {"model": "tiny-ae", "response_format": "json"}
    response = client.post("/v1/reconstruct", data=fields, files=multipart(png_bytes(clean[0])))
    assert response.json()["model"] == "tiny-ae"


def test_a_field_in_the_body_wins_over_the_query_parameter(client: TestClient, clean: torch.Tensor) -> None:
    response = client.post(
        "/v1/reconstruct?model=tiny-denoise", json={"images": [b64(png_bytes(clean[0]))], "model": "tiny-ae"}
    )
    assert response.json()["model"] == "tiny-ae"


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("WEBP", "image/webp"),
        ("BMP", "image/bmp"),
        ("TIFF", "image/tiff"),
        ("GIF", "image/gif"),
    ],
)
def test_every_image_format_is_accepted(client: TestClient, clean: torch.Tensor, fmt: str, content_type: str) -> None:
    buffer = io.BytesIO()
    Image.fromarray((clean[0, 0].numpy() * 255).astype(np.uint8), mode="L").save(buffer, fmt)
    response = client.post("/v1/denoise", content=buffer.getvalue(), headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    assert decode_png(response.content).shape == (28, 28)


def test_reconstruct_scores_digits_below_noise(client: TestClient, clean: torch.Tensor) -> None:
    noise = torch.rand((3, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    response = client.post("/v1/reconstruct", files=multipart(*pngs(clean[:5]), *pngs(noise)))
    assert response.status_code == 200
    body = response.json()
    errors = [item["reconstruction_error"] for item in body["data"]]
    assert max(errors[:5]) < min(errors[5:])  # an anomaly score: noise is far less like a digit
    # The score is the mean squared error between what the model saw and what it returned.
    inputs, outputs = quantised(torch.cat([clean[:5], noise])), json_images(response)
    for error, sent, returned in zip(errors, inputs, outputs, strict=True):
        assert error == pytest.approx(mse(sent, returned), abs=2e-3)


def test_reconstruction_error_is_a_header_on_png_answers(client: TestClient, clean: torch.Tensor) -> None:
    response = client.post("/v1/reconstruct", files=multipart(png_bytes(clean[0])))
    assert response.headers["content-type"] == "image/png"
    assert float(response.headers["x-reconstruction-error"]) >= 0


def test_a_photo_of_a_digit_on_paper_gives_a_sensible_result(client: TestClient, clean: torch.Tensor) -> None:
    photo = digit_photo(7)  # 200x160 JPEG, dark ink on textured paper
    response = client.post("/v1/reconstruct", content=photo, headers={"content-type": "image/jpeg"})
    assert response.status_code == 200
    assert response.headers["x-preprocessing"] == "mnist-frame"
    output = decode_png(response.content)
    assert output.shape == (28, 28)
    # A white digit on black in the middle of the field, like the model's own digits.
    assert output[:4, :4].max() < 0.2 and output[-4:, -4:].max() < 0.2
    assert output[8:20, 8:20].max() > 0.5
    # The model finds it as digit-like as drawn digits, and far more than noise.
    framed_error = float(response.headers["x-reconstruction-error"])
    scores = client.post("/v1/reconstruct", files=multipart(*pngs(clean))).json()["data"]
    noise = torch.rand((1, 1, 28, 28), generator=torch.Generator().manual_seed(1))
    noise_error = client.post("/v1/reconstruct", files=multipart(*pngs(noise))).headers["x-reconstruction-error"]
    assert framed_error < 2 * max(item["reconstruction_error"] for item in scores)
    assert framed_error < float(noise_error) / 2


def test_a_drawing_on_a_transparent_canvas_is_framed_white_on_black(client: TestClient) -> None:
    stroke = render_digit(4, np.random.default_rng(3), size=84)  # (84, 84) ink amount
    rgba = np.zeros((84, 84, 4), dtype=np.uint8)
    rgba[..., 3] = (stroke * 255).astype(np.uint8)  # black ink, transparent elsewhere
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, "PNG")
    response = client.post("/v1/denoise?response_format=json", files=multipart(buffer.getvalue()))
    item = response.json()["data"][0]
    assert item["preprocessing"] == "mnist-frame"
    output = json_images(response)[0]
    assert output[:3, :3].max() < 0.2 and output.max() > 0.5


def test_preprocess_none_refuses_other_sizes_naming_the_expected_one(client: TestClient) -> None:
    response = client.post(
        "/v1/denoise?preprocess=none", content=digit_photo(3), headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 400
    assert "28x28" in response.json()["error"]["message"] and "200x160" in response.json()["error"]["message"]


def test_super_resolution_refuses_other_sizes_naming_the_trained_one(client: TestClient, clean: torch.Tensor) -> None:
    response = client.post("/v1/super-resolve", files=multipart(png_bytes(clean[0])))
    assert response.status_code == 400
    assert "14x14" in response.json()["error"]["message"]
    assert response.json()["error"]["param"] == "image[0]"
