"""The issue's "done when": a newcomer trains a model on a folder of their own images with the command line,
and the real service serves that checkpoint folder as it is, to the Python client and to `ae`.

The images are 32x32 (some RGB, some grayscale, in nested folders and several formats, one corrupt), so
the service must take the models' own size and channels, not MNIST's 28x28 grayscale frame.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aeclient import Client, InvalidRequestError
from aeclient.cli import main as ae
from models.architectures import ConvAutoencoder
from models.checkpoint import load_checkpoint
from models.train import main as train

REPO_ROOT = Path(__file__).resolve().parents[2]
SIZE = 32
MODELS = {"reconstruct": "my-ae", "denoise": "my-denoiser", "super-resolve": "my-sr-x2", "vae": "my-vae"}
Capture = pytest.CaptureFixture[str]


def smooth_picture(seed: int) -> np.ndarray:
    """A (32, 32, 3) uint8 picture of soft colour waves: something an autoencoder can learn a little of."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    channels = [np.sin(2 * np.pi * (f * xs + g * ys) + p) for f, g, p in rng.uniform(0.3, 2.0, (3, 3))]
    return ((np.stack(channels, axis=-1) * 0.5 + 0.5) * 255).astype(np.uint8)


def write_own_images(root: Path) -> Path:
    """16 pictures in nested folders as PNG, JPEG, BMP, WebP, TIFF and GIF, 4 of them grayscale; one corrupt file."""
    formats = ["png", "jpg", "bmp", "webp", "tiff", "gif", "png", "png"]
    for index in range(16):
        folder = root / ("summer" if index % 2 else "winter/snow")
        folder.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(smooth_picture(index))
        if index % 4 == 3:
            picture = picture.convert("L")
        picture.save(folder / f"picture{index}.{formats[index % len(formats)]}")
    (root / "summer" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole jpeg")
    return root


@pytest.fixture(scope="module")
def own_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four models trained with the command line on one folder of one's own images: the newcomer's steps."""
    images_dir = write_own_images(tmp_path_factory.mktemp("mine") / "my-pictures")
    out = tmp_path_factory.mktemp("checkpoints")
    common = ["--images-dir", str(images_dir), "--out", str(out), "--epochs", "2", "--threads", "1"]
    # The first exactly as the README says, `ae train` in a fresh process; the others in this one (faster).
    subprocess.run(
        [
            sys.executable,
            "-m",
            "aeclient.cli",
            "train",
            *common,
            "--task",
            "reconstruct",
            "--name",
            MODELS["reconstruct"],
        ],
        cwd=REPO_ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for task in ("denoise", "super-resolve", "vae"):
        extra = ["--latent-size", "2"] if task == "vae" else []  # 2-d: the manifold needs it, so one VAE serves both
        assert train([*common, "--task", task, "--name", MODELS[task], *extra]) == 0
    return out


@pytest.fixture(scope="module")
def own_server(own_checkpoints: Path, serve_checkpoints: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    defaults = {
        "reconstruct": MODELS["reconstruct"],
        "embed": MODELS["reconstruct"],
        "denoise": MODELS["denoise"],
        "super_resolve": MODELS["super-resolve"],
        "vae": MODELS["vae"],
        "manifold": MODELS["vae"],
    }
    with serve_checkpoints(own_checkpoints, defaults) as url:  # returns once /readyz says ready
        yield url


@pytest.fixture
def client(own_server: str) -> Iterator[Client]:
    with Client(own_server) as ae_client:
        yield ae_client


def as_tensor(picture: Image.Image) -> torch.Tensor:
    """An 'RGB' picture -> (1, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


def test_the_service_lists_the_new_models_with_their_own_input(client: Client) -> None:
    listed = {entry["name"]: entry for entry in client.models()}
    assert set(listed) == set(MODELS.values())
    for name in MODELS.values():
        assert listed[name]["state"] == "loaded"  # defaults are loaded and warmed up before /readyz says ready
        side = SIZE // 2 if name == "my-sr-x2" else SIZE
        assert listed[name]["input"] == {"channels": 3, "height": side, "width": side, "domain": "user-images"}
        assert listed[name]["training"]["licence"] == "unknown: user-supplied images"
        assert listed[name]["training"]["dataset"]["images"] == 16
        assert listed[name]["training"]["dataset"]["skipped_files"] == 1
        assert listed[name]["metrics"]["held_out"]["images"] == 2
    assert "reconstruct_psnr_db" in listed["my-ae"]["metrics"]["held_out"]["scores"]
    assert "vae_negative_elbo_nats" in listed["my-vae"]["metrics"]["held_out"]["scores"]


def test_served_outputs_are_the_trained_models_outputs(client: Client, own_checkpoints: Path) -> None:
    picture = Image.fromarray(smooth_picture(99))  # a new 32x32 RGB picture
    model = load_checkpoint(own_checkpoints / "my-ae").model  # what the service loads, in this process
    assert isinstance(model, ConvAutoencoder)
    with torch.no_grad():
        expected_image = model(as_tensor(picture))[0].permute(1, 2, 0).numpy()  # (32, 32, 3)
        expected_code = model.embed(as_tensor(picture))[0].numpy()

    reconstruction = client.reconstruct(picture)
    served = np.asarray(reconstruction.images[0], dtype=np.float32) / 255.0
    assert reconstruction.images[0].mode == "RGB" and served.shape == (SIZE, SIZE, 3)
    assert np.abs(served - expected_image).max() <= 0.5 / 255 + 1e-6  # only the PNG's 8-bit rounding
    np.testing.assert_allclose(client.embed(picture)[0], expected_code, rtol=1e-4, atol=1e-5)

    assert client.denoise(picture)[0].size == (SIZE, SIZE)
    assert client.super_resolve(picture.resize((SIZE // 2, SIZE // 2)))[0].size == (SIZE, SIZE)
    samples = client.vae_sample(3, seed=1)
    assert [(sample.size, sample.mode) for sample in samples] == [((SIZE, SIZE), "RGB")] * 3
    assert client.vae_encode(picture).mean.shape == (1, 2)
    assert client.vae_manifold(3).size == (3 * SIZE, 3 * SIZE)


def test_another_size_is_refused_naming_the_models_size(client: Client) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        client.reconstruct(Image.fromarray(smooth_picture(1)).resize((28, 28)))
    assert refused.value.status_code == 400
    assert "takes 32x32 images for reconstruct; got 28x28" in refused.value.message
    with pytest.raises(InvalidRequestError, match="takes 16x16 images for super-resolve"):
        client.super_resolve(Image.fromarray(smooth_picture(1)))


def test_the_ae_command_line_calls_them(own_server: str, tmp_path: Path, capsys: Capture) -> None:
    picture = tmp_path / "holiday.png"
    Image.fromarray(smooth_picture(7)).save(picture)
    assert ae(["reconstruct", str(picture), "-o", str(tmp_path / "out.png"), "--url", own_server]) == 0
    assert Image.open(tmp_path / "out.png").size == (SIZE, SIZE)
    capsys.readouterr()  # what reconstruct printed (its anomaly scores)
    assert ae(["embed", str(picture), "--format", "jsonl", "--url", own_server, "--model", "my-ae"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["file"] == str(picture) and len(row["embedding"]) == 32
    assert ae(["sample", "-n", "4", "--seed", "1", "-o", str(tmp_path / "grid.png"), "--url", own_server]) == 0
    assert Image.open(tmp_path / "grid.png").size == (2 * SIZE, 2 * SIZE)
