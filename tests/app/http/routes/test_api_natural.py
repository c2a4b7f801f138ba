"""Models of photographs (card domain "natural": DnCNN, FSRCNN) through /v1/denoise and /v1/super-resolve.

Tiny checkpoints with real natural-model cards (3 channels, any size) sit next to the session's tiny MNIST
ones: a DnCNN trained for a moment on smooth random pictures (it really removes noise), and untrained
FSRCNN x2 and x3 models where only equivalence with the model's own method is checked. Every answer is
compared with calling `model.denoise` / `model.super_resolve` on what the server decoded, within the
1/255 of PNG quantisation.
"""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import make_settings, running_server
from fastapi.testclient import TestClient
from PIL import Image
from service_helpers import assert_error, b64
from tiny_checkpoints import DEFAULT_MODELS
from torch.nn import functional as F

from app.engine.models.catalogue import LoadState, ModelEntry
from app.engine.models.model_choice import ModelChoice
from app.engine.models.registry import ModelRegistry
from app.main import create_app
from app.settings import DefaultModels
from models.architectures import FSRCNN, DnCNN, DnCNNConfig, FSRCNNConfig
from models.checkpoint import InputSpec, ModelCard, load_checkpoint, save_checkpoint
from models.data.natural_images import rgb_to_ycbcr
from models.runtime.tiling import DEFAULT_TILE

NOISE_SIGMA = 0.1  # 25.5 on the 0..255 scale
UNTILED = 1 << 14  # a tile larger than any test image: one window, i.e. the plain network
NATURAL_DEFAULTS = {**DEFAULT_MODELS, "denoise": "photo-denoise", "super_resolve": "photo-sr-x2"}


def smooth_pictures(count: int, height: int, width: int, channels: int, seed: int) -> torch.Tensor:
    """(count, channels, height, width) in [0, 1]: bicubically upscaled coarse noise, like soft photographs."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((count, channels, height // 6 + 2, width // 6 + 2), generator=generator)
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False).clamp(0.0, 1.0)


def add_noise(images: torch.Tensor, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (images + NOISE_SIGMA * torch.randn(images.shape, generator=generator)).clamp(0.0, 1.0)


def natural_card(name: str, task: str, scale: int | None = None) -> ModelCard:
    """A card shaped like models.training.photo.natural.natural_model_card's."""
    return ModelCard(
        name=name,
        tasks=[task],
        architecture="",
        architecture_config={},
        input=InputSpec(channels=3, height=None, width=None, domain="natural"),
        normalization="pixels as float32 in [0, 1], RGB, any size (tiled inference)",
        scale=scale,
        description="tiny test model of photographs",
        training={"data": "smooth random pictures drawn by tests/app/http/routes/test_api_natural.py"},
    )


def train_denoiser(steps: int = 100) -> DnCNN:
    torch.manual_seed(0)
    model = DnCNN(DnCNNConfig(depth=4, width=8))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        clean = smooth_pictures(16, 32, 32, 1, seed=step)
        loss = F.mse_loss(model(add_noise(clean, seed=10_000 + step)), clean)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def build_natural_checkpoints(root: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: more threads only fight over the cores
    try:
        save_checkpoint(train_denoiser(), natural_card("photo-denoise", "denoise"), root / "photo-denoise")
        for scale in (2, 3):
            torch.manual_seed(scale)
            model = FSRCNN(FSRCNNConfig(scale=scale, features=8, shrink=4, mapping_layers=1))
            save_checkpoint(
                model, natural_card(f"photo-sr-x{scale}", "super-resolve", scale), root / f"photo-sr-x{scale}"
            )
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def natural_dir(checkpoints_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny MNIST checkpoints (the other defaults) plus the tiny models of photographs."""
    root = tmp_path_factory.mktemp("natural") / "checkpoints"
    shutil.copytree(checkpoints_dir, root)
    build_natural_checkpoints(root)
    return root


@pytest.fixture(scope="module")
def natural(natural_dir: Path) -> Iterator[TestClient]:
    """The app with the denoiser and the x2 model of photographs as defaults (preloaded and warmed up)."""
    settings = make_settings(natural_dir, default_models=DefaultModels(**NATURAL_DEFAULTS))
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def denoiser(natural_dir: Path) -> DnCNN:
    """The denoiser's checkpoint loaded directly, to compare the service's answers with."""
    model = load_checkpoint(natural_dir / "photo-denoise").model
    assert isinstance(model, DnCNN)
    return model


@pytest.fixture(scope="module")
def upscalers(natural_dir: Path) -> dict[int, FSRCNN]:
    """The super-resolution checkpoints by scale, loaded directly."""
    models = {}
    for scale in (2, 3):
        model = load_checkpoint(natural_dir / f"photo-sr-x{scale}").model
        assert isinstance(model, FSRCNN)
        models[scale] = model
    return models


# -- pictures in and out -------------------------------------------------------------------------------


def to_png(images: torch.Tensor) -> bytes:
    """(C, H, W) floats in [0, 1], C = 1 or 3 -> PNG bytes (L or RGB)."""
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    array = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def read_png(data: bytes) -> tuple[np.ndarray, str]:
    """PNG bytes -> (H, W) or (H, W, 3) uint8 pixels and the PNG's mode."""
    image = Image.open(io.BytesIO(data))
    return np.asarray(image), image.mode


def as_sent(data: bytes) -> torch.Tensor:
    """What the service reads from an image file: (1, C, H, W) floats, the 8-bit values / 255."""
    pixels = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32) / 255.0)
    return (pixels[None] if pixels.dim() == 2 else pixels.permute(2, 0, 1))[None]


def quantised(images: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) -> the pixels the service sends back: (H, W) or (H, W, C) uint8."""
    pixels = (images[0].clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()


def assert_within_one_level(got: np.ndarray, expected: np.ndarray) -> None:
    """Equal within PNG quantisation: float rounding may put a value on the other side of a half level."""
    assert got.shape == expected.shape
    difference = np.abs(got.astype(np.int16) - expected.astype(np.int16))
    assert difference.max() <= 1, difference.max()


def json_pngs(response: httpx.Response) -> list[bytes]:
    return [base64.b64decode(item["b64_png"]) for item in response.json()["data"]]


def mse(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    return float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))


# -- denoising -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [3, 1])
def test_denoise_any_size_equals_the_model_and_keeps_the_colour_mode(
    natural: TestClient, denoiser: DnCNN, channels: int
) -> None:
    noisy = to_png(add_noise(smooth_pictures(1, 37, 53, channels, seed=1), seed=2)[0])
    response = natural.post("/v1/denoise", files=[("image", ("photo.png", noisy, "image/png"))])
    assert response.status_code == 200, response.text
    assert response.headers["x-model"] == "photo-denoise"
    assert response.headers["x-preprocessing"] == "none"  # never the MNIST frame
    pixels, mode = read_png(response.content)
    assert mode == ("RGB" if channels == 3 else "L")  # a grayscale picture comes back grayscale
    assert pixels.shape[:2] == (37, 53)
    with torch.inference_mode():
        expected = denoiser.denoise(as_sent(noisy))
    assert_within_one_level(pixels, quantised(expected))


def test_the_trained_denoiser_brings_photos_closer_to_the_clean_ones(natural: TestClient) -> None:
    clean = smooth_pictures(3, 41, 67, 3, seed=5)
    noisy = add_noise(clean, seed=6)
    response = natural.post("/v1/denoise", json={"images": [b64(to_png(image)) for image in noisy]})
    assert response.status_code == 200, response.text
    for clean_image, noisy_png, denoised_png in zip(
        clean, [to_png(i) for i in noisy], json_pngs(response), strict=True
    ):
        target = quantised(clean_image[None]).astype(np.float64) / 255
        noisy_pixels = read_png(noisy_png)[0].astype(np.float64) / 255
        denoised = read_png(denoised_png)[0].astype(np.float64) / 255
        assert mse(denoised, target) < 0.7 * mse(noisy_pixels, target), (
            mse(denoised, target),
            mse(noisy_pixels, target),
        )


def test_a_picture_larger_than_a_tile_equals_the_untiled_network(natural: TestClient, denoiser: DnCNN) -> None:
    height, width = 300, 520
    assert max(height, width) > DEFAULT_TILE  # the service cuts it into windows
    noisy = to_png(add_noise(smooth_pictures(1, height, width, 3, seed=8), seed=9)[0])
    model = denoiser
    sent = as_sent(noisy)
    with torch.inference_mode():
        tiled, untiled = model.denoise(sent), model.denoise(sent, tile=UNTILED)
    assert (tiled - untiled).abs().max().item() < 1e-4
    response = natural.post("/v1/denoise", content=noisy, headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    assert_within_one_level(read_png(response.content)[0], quantised(untiled))


def test_super_resolution_of_a_picture_larger_than_a_tile_equals_the_untiled_network(
    natural: TestClient, upscalers: dict[int, FSRCNN]
) -> None:
    low = to_png(smooth_pictures(1, 270, 290, 3, seed=10)[0])
    with torch.inference_mode():
        untiled = upscalers[2].super_resolve(as_sent(low), tile=UNTILED)
    response = natural.post("/v1/super-resolve", content=low, headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    pixels, _ = read_png(response.content)
    assert pixels.shape == (540, 580, 3)
    assert_within_one_level(pixels, quantised(untiled))


def test_several_sizes_in_one_request_each_get_their_own_answer_in_order(natural: TestClient, denoiser: DnCNN) -> None:
    pictures = [
        to_png(add_noise(smooth_pictures(1, 37, 53, 3, seed=11), seed=12)[0]),
        to_png(add_noise(smooth_pictures(1, 20, 31, 1, seed=13), seed=14)[0]),
        to_png(add_noise(smooth_pictures(1, 64, 48, 3, seed=15), seed=16)[0]),
        to_png(add_noise(smooth_pictures(1, 37, 53, 3, seed=17), seed=18)[0]),  # the first one's size again
    ]
    files = [("image", (f"p{index}.png", data, "image/png")) for index, data in enumerate(pictures)]
    response = natural.post("/v1/denoise", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["index"] for item in body["data"]] == [0, 1, 2, 3]
    assert [(item["width"], item["height"]) for item in body["data"]] == [(53, 37), (31, 20), (48, 64), (53, 37)]
    for sent, answer in zip(pictures, json_pngs(response), strict=True):
        with torch.inference_mode():
            expected = denoiser.denoise(as_sent(sent))
        assert_within_one_level(read_png(answer)[0], quantised(expected))


def test_the_mnist_frame_never_touches_models_of_photographs(natural: TestClient) -> None:
    # A 200x160 dark-on-light picture would be inverted, cropped and framed to 28x28 for an MNIST model.
    picture = to_png((1 - 0.5 * smooth_pictures(1, 160, 200, 1, seed=19))[0])
    for preprocess in ("auto", "none"):
        response = natural.post(
            f"/v1/denoise?preprocess={preprocess}", content=picture, headers={"content-type": "image/png"}
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-preprocessing"] == "none"
        assert read_png(response.content)[0].shape == (160, 200)
    response = natural.post("/v1/super-resolve?scale=3", json={"images": [b64(picture)], "preprocess": "auto"})
    assert response.json()["data"][0]["preprocessing"] == "none"
    assert (response.json()["data"][0]["width"], response.json()["data"][0]["height"]) == (600, 480)


@pytest.mark.parametrize(
    ("mode", "size"),
    [("RGB", (1, 1)), ("L", (1, 600)), ("RGBA", (9, 7)), ("LA", (5, 12)), ("P", (13, 3)), ("I;16", (8, 8))],
)
def test_odd_pictures_never_fail(natural: TestClient, mode: str, size: tuple[int, int]) -> None:
    """Tiny, very long, transparent, palette and 16-bit pictures: all served, grayscale ones as grayscale."""
    width, height = size
    base = Image.fromarray(
        (smooth_pictures(1, height, width, 3, seed=20)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    )
    picture = base.convert("L").convert(mode) if mode in ("L", "LA", "I;16") else base.convert(mode)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    gray = mode in ("L", "LA", "I;16")
    for route, scale in (("/v1/denoise", 1), ("/v1/super-resolve?scale=3", 3)):
        response = natural.post(route, content=buffer.getvalue(), headers={"content-type": "image/png"})
        assert response.status_code == 200, (route, response.text)
        pixels, out_mode = read_png(response.content)
        assert out_mode == ("L" if gray else "RGB")
        assert pixels.shape[:2] == (height * scale, width * scale)


# -- super-resolution and scale ------------------------------------------------------------------------


def test_super_resolution_upscales_luminance_by_the_network_and_colour_bicubically(
    natural: TestClient, upscalers: dict[int, FSRCNN]
) -> None:
    # Mid-range colours, so that nothing is clipped and the colour planes can be compared with bicubic.
    low = to_png((0.25 + 0.5 * smooth_pictures(1, 29, 34, 3, seed=21))[0])
    response = natural.post("/v1/super-resolve", files=[("image", ("low.png", low, "image/png"))])
    assert response.status_code == 200, response.text
    assert response.headers["x-model"] == "photo-sr-x2"
    pixels, mode = read_png(response.content)
    assert mode == "RGB" and pixels.shape == (58, 68, 3)
    with torch.inference_mode():
        expected = upscalers[2].super_resolve(as_sent(low))
    assert_within_one_level(pixels, quantised(expected))
    got = rgb_to_ycbcr(torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1)[None])
    bicubic = rgb_to_ycbcr(F.interpolate(as_sent(low), scale_factor=2, mode="bicubic", align_corners=False))
    # Colour: bicubic, within rounding, wherever the untrained network's luminance left RGB unclipped.
    unclipped = torch.from_numpy(((pixels > 0) & (pixels < 255)).all(axis=2))
    assert unclipped.float().mean().item() > 0.5
    assert (got[0, 1:, unclipped] - bicubic[0, 1:, unclipped]).abs().max().item() < 2.5 / 255
    assert (got[:, :1] - bicubic[:, :1]).abs().max().item() > 5 / 255  # luminance: the network's, not bicubic


def test_scale_without_model_picks_a_model_with_that_factor(natural: TestClient) -> None:
    low = to_png(smooth_pictures(1, 10, 13, 3, seed=22)[0])
    raw = {"content": low, "headers": {"content-type": "image/png"}}
    three = natural.post("/v1/super-resolve?scale=3", **raw)
    assert three.status_code == 200, three.text
    assert three.headers["x-model"] == "photo-sr-x3"
    assert read_png(three.content)[0].shape == (30, 39, 3)
    two = natural.post("/v1/super-resolve?scale=2", **raw)  # the default has it
    assert two.headers["x-model"] == "photo-sr-x2" and read_png(two.content)[0].shape == (20, 26, 3)
    # scale as a multipart field and as a JSON field, like every other option; the body wins over the query.
    form = natural.post(
        "/v1/super-resolve?scale=2", data={"scale": "3"}, files=[("image", ("l.png", low, "image/png"))]
    )
    assert form.status_code == 200 and form.headers["x-model"] == "photo-sr-x3"
    body = natural.post("/v1/super-resolve", json={"images": [b64(low)], "scale": 3})
    assert body.status_code == 200 and body.json()["model"] == "photo-sr-x3"
    assert (body.json()["data"][0]["width"], body.json()["data"][0]["height"]) == (39, 30)
    # With the model named, a matching scale is fine.
    assert natural.post("/v1/super-resolve?model=photo-sr-x3&scale=3", **raw).status_code == 200


def test_a_scale_that_does_not_fit_is_refused(natural: TestClient) -> None:
    low = to_png(smooth_pictures(1, 10, 13, 3, seed=23)[0])
    raw = {"content": low, "headers": {"content-type": "image/png"}}
    error = assert_error(natural.post("/v1/super-resolve?model=photo-sr-x2&scale=3", **raw), 400, "invalid_request")
    assert error["param"] == "scale" and "x2" in error["message"] and "x3" in error["message"]
    error = assert_error(natural.post("/v1/super-resolve?scale=4", **raw), 400, "invalid_request")
    assert error["param"] == "scale"
    assert "available scales: x2, x3" in error["message"]
    for scale in ("1", "9", "0", "-2", "two", "2.5"):
        error = assert_error(natural.post(f"/v1/super-resolve?scale={scale}", **raw), 422, "validation_error")
        assert error["param"] is not None and "scale" in error["param"]
    error = assert_error(natural.post("/v1/super-resolve", json={"images": [b64(low)], "scale": 9}), 422)
    assert error["param"] == "scale"
    # scale is an option of /v1/super-resolve only
    assert_error(natural.post("/v1/denoise?scale=2", **raw), 422, "validation_error")


def test_the_scale_choice_prefers_the_default_then_its_domain_then_the_name(natural_dir: Path) -> None:
    settings = make_settings(natural_dir, default_models=DefaultModels(**NATURAL_DEFAULTS))
    registry = ModelRegistry(settings)
    choice = ModelChoice(registry, settings.default_models)

    def add(name: str, scale: int, domain: str, state: LoadState = "not_loaded") -> None:
        card = ModelCard(name, ["super-resolve"], "fsrcnn", {}, InputSpec(3, None, None, domain), scale=scale)
        registry.entries[name] = ModelEntry(name, natural_dir / name, card, state)

    add("photo-sr-x2", 2, "natural")  # the default
    add("a-mnist-x2", 2, "mnist")
    add("b-photo-x2", 2, "natural")
    add("a-mnist-x4", 4, "mnist")
    add("z-photo-x4", 4, "natural")
    add("c-photo-x4", 4, "natural", state="unavailable")
    add("a-mnist-x5", 5, "mnist")
    assert choice.choose_super_resolution(None, 2).name == "photo-sr-x2"
    assert choice.choose_super_resolution(None, 4).name == "z-photo-x4"  # the default's domain before the name
    assert choice.choose_super_resolution(None, 5).name == "a-mnist-x5"
    assert choice.choose_super_resolution(None, None).name == "photo-sr-x2"
    assert choice.choose_super_resolution("a-mnist-x4", 4).name == "a-mnist-x4"


# -- limits --------------------------------------------------------------------------------------------


def test_the_pixel_cap_applies_to_the_upscaled_answer(natural_dir: Path) -> None:
    cap = 80 * 80
    settings = make_settings(
        natural_dir, default_models=DefaultModels(**NATURAL_DEFAULTS), max_pixels=cap, preload="none"
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as capped:

        def send(route: str, width: int, height: int) -> httpx.Response:
            picture = to_png(smooth_pictures(1, height, width, 3, seed=24)[0])
            return capped.post(route, files=[("image", ("p.png", picture, "image/png"))])

        assert send("/v1/super-resolve", 40, 40).status_code == 200  # 80x80: exactly the cap
        error = assert_error(send("/v1/super-resolve", 41, 40), 413, "payload_too_large")
        assert error["param"] == "image[0]"  # the part at fault
        assert "upscaled x2" in error["message"] and "82x80 = 6560 pixels" in error["message"]
        assert "applies to the answer" in error["message"] and "at most 1600 pixels" in error["message"]
        error = assert_error(send("/v1/super-resolve?scale=3", 30, 30), 413, "payload_too_large")
        assert "upscaled x3" in error["message"] and "90x90" in error["message"]
        assert send("/v1/super-resolve?scale=3", 26, 26).status_code == 200
        # Denoising answers the size it gets: the cap is the image's own.
        assert send("/v1/denoise", 80, 80).status_code == 200
        error = assert_error(send("/v1/denoise", 81, 80), 413, "payload_too_large")
        assert "the limit is 6400" in error["message"] and "upscaled" not in error["message"]


# -- listing, readiness, a real server ----------------------------------------------------------------


def test_models_list_and_describe_the_natural_cards(natural: TestClient) -> None:
    response = natural.get("/v1/models")
    assert response.status_code == 200
    listed = {item["name"]: item for item in response.json()["data"]}
    for name, task, scale in [
        ("photo-denoise", "denoise", None),
        ("photo-sr-x2", "super-resolve", 2),
        ("photo-sr-x3", "super-resolve", 3),
    ]:
        for card in (listed[name], natural.get(f"/v1/models/{name}").json()):
            assert card["tasks"] == [task] and card["scale"] == scale
            assert card["input"] == {"channels": 3, "height": None, "width": None, "domain": "natural"}
            assert card["architecture"] == ("dncnn" if task == "denoise" else "fsrcnn")
            assert card["state"] in ("loaded", "not_loaded") and card["reason"] is None
            assert len(card["sha256"]) == 64
    assert listed["photo-denoise"]["state"] == "loaded"  # a preloaded default


def test_ready_with_natural_defaults_preloaded(natural: TestClient) -> None:
    response = natural.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["models"]["photo-denoise"] == "loaded" and body["models"]["photo-sr-x2"] == "loaded"


def test_a_real_server_serves_photographs(natural_dir: Path, natural: TestClient) -> None:
    noisy = to_png(add_noise(smooth_pictures(1, 37, 53, 3, seed=25), seed=26)[0])
    low = to_png(smooth_pictures(1, 11, 17, 1, seed=27)[0])
    with running_server(natural_dir, NATURAL_DEFAULTS) as base_url:
        denoised = httpx.post(f"{base_url}/v1/denoise", files={"image": ("p.png", noisy, "image/png")}, timeout=60)
        upscaled = httpx.post(
            f"{base_url}/v1/super-resolve?scale=3", files={"image": ("l.png", low, "image/png")}, timeout=60
        )
    assert denoised.status_code == 200, denoised.text
    in_process = natural.post("/v1/denoise", files=[("image", ("p.png", noisy, "image/png"))])
    assert denoised.content == in_process.content  # the same PNG bytes
    assert upscaled.status_code == 200 and upscaled.headers["x-model"] == "photo-sr-x3"
    pixels, mode = read_png(upscaled.content)
    assert mode == "L" and pixels.shape == (33, 51)
