"""`scale` of super-resolution from the client and the command line, against a real server with models of
photographs (untrained FSRCNN x2 and x3 with natural-image cards) next to the tiny MNIST checkpoints."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aeclient import AsyncClient, Client, InvalidRequestError, ValidationError
from aeclient import requests as api
from aeclient.cli import main
from models.architectures import FSRCNN, FSRCNNConfig
from models.checkpoint import InputSpec, ModelCard, save_checkpoint

DEFAULTS = {
    "denoise": "tiny-denoise",
    "super_resolve": "photo-sr-x2",
    "reconstruct": "tiny-denoise",
    "embed": "tiny-ae",
    "vae": "tiny-vae-2d",
    "manifold": "tiny-vae-2d",
}


@pytest.fixture(scope="module")
def photo_server(
    checkpoints_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    serve_checkpoints: Callable[..., AbstractContextManager[str]],
) -> Iterator[str]:
    root = tmp_path_factory.mktemp("photo-sr") / "checkpoints"
    shutil.copytree(checkpoints_dir, root)  # the other default models
    for scale in (2, 3):
        torch.manual_seed(scale)
        card = ModelCard(
            name=f"photo-sr-x{scale}",
            tasks=["super-resolve"],
            architecture="",
            architecture_config={},
            input=InputSpec(channels=3, height=None, width=None, domain="natural"),
            scale=scale,
            description="untrained test model of photographs",
        )
        model = FSRCNN(FSRCNNConfig(scale=scale, features=8, shrink=4, mapping_layers=1))
        save_checkpoint(model, card, root / card.name)
    with serve_checkpoints(root, DEFAULTS) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(11, 17, 3), dtype=np.uint8)  # (H, W, RGB)


def test_client_scale_picks_the_model(photo_server: str, photo: np.ndarray) -> None:
    with Client(photo_server) as client:
        (default,) = client.super_resolve(photo)
        (three,) = client.super_resolve(photo, scale=3)
        (named,) = client.super_resolve(photo, model="photo-sr-x3", scale=3)
        assert default.size == (34, 22) and default.mode == "RGB"
        assert three.size == (51, 33) and three.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(named), np.asarray(three))
        with pytest.raises(InvalidRequestError) as mismatch:
            client.super_resolve(photo, model="photo-sr-x2", scale=3)
        assert mismatch.value.status_code == 400 and mismatch.value.param == "scale"
        with pytest.raises(InvalidRequestError) as unserved:
            client.super_resolve(photo, scale=4)
        assert "available scales: x2, x3" in unserved.value.message
        with pytest.raises(ValidationError):
            client.super_resolve(photo, scale=9)


async def test_async_client_scale(photo_server: str, photo: np.ndarray) -> None:
    async with AsyncClient(photo_server) as client:
        (three,) = await client.super_resolve(photo, scale=3)
    with Client(photo_server) as sync:
        (expected,) = sync.super_resolve(photo, scale=3)
    np.testing.assert_array_equal(np.asarray(three), np.asarray(expected))


def test_cli_scale_and_any_size_models(
    photo_server: str, photo: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "photo.png"
    Image.fromarray(photo).save(source)
    out = tmp_path / "big.png"
    assert main(["super-resolve", str(source), "-o", str(out), "--scale", "3", "--url", photo_server]) == 0
    assert Image.open(out).size == (51, 33)
    assert main(["super-resolve", str(source), "-o", str(out), "--scale", "5", "--url", photo_server]) == 1
    assert "available scales" in capsys.readouterr().err
    assert main(["models", "--url", photo_server]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["photo-sr-x3"][2] == "any" and rows["tiny-ae"][2] == "28x28"


def test_scale_is_not_sent_when_left_out(photo: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "PNG")
    assert "scale" not in (api.super_resolve(buffer.getvalue(), None, "auto").json or {})
    assert (api.super_resolve(buffer.getvalue(), None, "auto", 3).json or {})["scale"] == 3
