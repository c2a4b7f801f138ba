"""/v1/denoise on models of every noise level (FFDNet): sigma given or estimated, the gray/colour pair.

Two tiny FFDNet checkpoints, a grayscale and a colour one, sit beside the session's tiny MNIST models.
Every answer is compared with calling the model's own `denoise_at` at the sigma the service reports, on
what the server decoded (within the 1/255 of PNG quantisation); the reported sigma, when not given, is
the noise estimator's on the decoded picture.
"""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_settings, running_server
from fastapi.testclient import TestClient
from PIL import Image
from service_helpers import assert_error
from test_api_natural import as_sent, assert_within_one_level, quantised, read_png, to_png

from app.main import create_app
from models.architectures import FFDNet, FFDNetConfig
from models.checkpoint import InputSpec, ModelCard, load_checkpoint, save_checkpoint
from models.quality.noise_estimation import estimate_sigma

PAIR = ("photo-denoise-gray", "photo-denoise-color")


def ffdnet_card(name: str, channels: int) -> ModelCard:
    return ModelCard(
        name=name,
        tasks=["denoise"],
        architecture="ffdnet",
        architecture_config={},
        input=InputSpec(channels=channels, height=None, width=None, domain="natural"),
        description="tiny untrained FFDNet for tests",
        companion=next(other for other in PAIR if other != name),
    )


def scene(height: int, width: int, channels: int, sigma: float, seed: int) -> torch.Tensor:
    """(C, H, W) in [0, 1]: smooth gradients plus 8-bit noise of `sigma` (0..255 scale)."""
    rows, columns = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    base = 0.3 + 0.4 * columns / width + 0.1 * torch.sin(rows / 7.0)
    clean = torch.stack([base.roll(5 * c, dims=1) for c in range(channels)])
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed)) * sigma / 255
    return ((clean + noise).clamp(0, 1) * 255).round() / 255


@pytest.fixture(scope="module")
def level_dir(checkpoints_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("noise-level") / "checkpoints"
    shutil.copytree(checkpoints_dir, root)
    for name, channels, seed in ((PAIR[0], 1, 1), (PAIR[1], 3, 2)):
        torch.manual_seed(seed)
        model = FFDNet(FFDNetConfig(channels=channels, depth=3, width=8))
        save_checkpoint(model, ffdnet_card(name, channels), root / name)
    return root


@pytest.fixture(scope="module")
def client(level_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(level_dir)), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def networks(level_dir: Path) -> dict[str, FFDNet]:
    models = {}
    for name in PAIR:
        model = load_checkpoint(level_dir / name).model
        assert isinstance(model, FFDNet)
        models[name] = model
    return models


def post(client: TestClient, png: bytes, **fields: str) -> object:
    return client.post("/v1/denoise", files=[("image", ("p.png", png, "image/png"))], data=fields)


@pytest.mark.parametrize(
    ("model", "channels", "serving"),
    [(PAIR[1], 3, PAIR[1]), (PAIR[1], 1, PAIR[0]), (PAIR[0], 1, PAIR[0]), (PAIR[0], 3, PAIR[1])],
)
def test_given_sigma_goes_to_the_model_of_the_pictures_colour_mode(
    client: TestClient, networks: dict[str, FFDNet], model: str, channels: int, serving: str
) -> None:
    png = to_png(scene(41, 58, channels, 20, seed=3))
    response = post(client, png, model=model, sigma="20")
    assert response.status_code == 200, response.text
    assert response.headers["x-model"] == serving
    assert response.headers["x-noise-sigma"] == "20.00"
    pixels, mode = read_png(response.content)
    assert mode == ("RGB" if channels == 3 else "L") and pixels.shape[:2] == (41, 58)
    with torch.inference_mode():
        expected = networks[serving].denoise_at(as_sent(png), 20.0)
    assert_within_one_level(pixels, quantised(expected))


def test_without_sigma_the_service_estimates_it_per_image(client: TestClient, networks: dict[str, FFDNet]) -> None:
    pictures = [to_png(scene(64, 64, 3, sigma, seed=int(sigma))) for sigma in (10.0, 40.0)]
    response = client.post(
        "/v1/denoise",
        json={"model": PAIR[1], "images": [base64.b64encode(p).decode() for p in pictures]},
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    reported = [item["noise_sigma"] for item in data]
    assert response.headers["x-noise-sigma"] == ",".join(f"{s:.2f}" for s in reported)
    for picture, sigma, true_sigma, item in zip(pictures, reported, (10.0, 40.0), data, strict=True):
        sent = as_sent(picture)
        estimate = estimate_sigma(sent[0].permute(1, 2, 0).numpy() * 255)
        assert sigma == pytest.approx(round(estimate, 2), abs=0.011)
        assert abs(sigma - true_sigma) < 0.25 * true_sigma  # the estimator reads the noise that is there
        with torch.inference_mode():
            expected = networks[PAIR[1]].denoise_at(sent, sigma)
        answer = np.asarray(Image.open(io.BytesIO(base64.b64decode(item["b64_png"]))))
        assert_within_one_level(answer, quantised(expected))


@pytest.mark.parametrize("sigma", ["-1", "75.5", "abc"])
def test_sigma_out_of_range_is_a_422_naming_it(client: TestClient, sigma: str) -> None:
    response = post(client, to_png(scene(20, 20, 1, 5, seed=1)), model=PAIR[0], sigma=sigma)
    assert_error(response, 422, "validation_error")
    assert "sigma" in response.text


@pytest.mark.parametrize(
    ("model", "height", "width", "channels"),
    [(PAIR[0], 1, 1, 1), (PAIR[1], 2, 2, 3), (PAIR[0], 1, 200, 1), (PAIR[1], 6, 40, 3)],
)
def test_a_picture_too_small_to_estimate_is_a_400_naming_the_minimum_and_sigma(
    client: TestClient, model: str, height: int, width: int, channels: int
) -> None:
    png = to_png(scene(height, width, channels, 5, seed=1))
    response = post(client, png, model=model)
    assert_error(response, 400, "invalid_request")
    error = response.json()["error"]
    assert error["param"] == "sigma" and "7x7" in error["message"] and f"{width}x{height}" in error["message"]
    given = post(client, png, model=model, sigma="10")  # what the message advises works
    assert given.status_code == 200, given.text
    assert read_png(given.content)[0].shape[:2] == (height, width)


def test_the_smallest_picture_the_estimator_reads_is_estimated(client: TestClient) -> None:
    response = post(client, to_png(scene(7, 7, 1, 20, seed=4)), model=PAIR[0])
    assert response.status_code == 200, response.text
    assert float(response.headers["x-noise-sigma"]) >= 0


def test_sigma_as_a_query_parameter(client: TestClient) -> None:
    png = to_png(scene(20, 22, 1, 5, seed=1))
    response = client.post(f"/v1/denoise?model={PAIR[0]}&sigma=12.5", files=[("image", ("p.png", png, "image/png"))])
    assert response.status_code == 200 and response.headers["x-noise-sigma"] == "12.50"


def test_a_model_of_one_noise_level_refuses_sigma(client: TestClient) -> None:
    response = post(client, to_png(scene(28, 28, 1, 5, seed=1)), sigma="25")  # the default: the MNIST denoiser
    assert_error(response, 400, "invalid_request")
    body = response.json()["error"]
    assert body["param"] == "sigma" and PAIR[0] in body["message"] and PAIR[1] in body["message"]


def test_models_listing_shows_the_pair(client: TestClient) -> None:
    models = {item["name"]: item for item in client.get("/v1/models").json()["data"]}
    assert models[PAIR[0]]["input"]["channels"] == 1 and models[PAIR[1]]["input"]["channels"] == 3


def test_over_a_real_uvicorn(level_dir: Path, checkpoints_dir: Path) -> None:
    import httpx
    from tiny_checkpoints import DEFAULT_MODELS

    with running_server(level_dir, {**DEFAULT_MODELS, "denoise": PAIR[1]}) as url:
        png = to_png(scene(50, 70, 3, 30, seed=9))
        response = httpx.post(f"{url}/v1/denoise", files={"image": ("p.png", png, "image/png")}, timeout=60)
        assert response.status_code == 200, response.text
        assert response.headers["x-model"] == PAIR[1]
        assert 20 < float(response.headers["x-noise-sigma"]) < 40
        response = httpx.post(f"{url}/v1/denoise?sigma=80", files={"image": ("p.png", png, "image/png")}, timeout=60)
        assert response.status_code == 422 and "sigma" in response.text
