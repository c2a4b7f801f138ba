"""A model trained elsewhere, converted with deploy/convert_checkpoint.py, is served as it is."""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import DefaultModels, Settings
from models.architectures import ConvAutoencoder
from models.architectures.conv_autoencoder import ConvAutoencoderConfig
from models.checkpoint import read_card

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "deploy"))
from convert_checkpoint import main as convert  # noqa: E402


def train_tiny_autoencoder(steps: int = 30) -> ConvAutoencoder:
    """A small autoencoder fitted for a few steps to bright squares: someone's own model."""
    torch.manual_seed(0)
    model = ConvAutoencoder(ConvAutoencoderConfig(widths=(4, 4, 4), latent_size=8))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        images = torch.zeros(8, 1, 28, 28)  # (B, 1, 28, 28)
        corners = torch.randint(2, 16, (8, 2), generator=generator)
        for image, (top, left) in zip(images, corners.tolist(), strict=True):
            image[:, top : top + 10, left : left + 10] = 1.0
        loss = torch.nn.functional.mse_loss(model(images), images)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def test_converted_model_is_served(tmp_path: Path) -> None:
    model = train_tiny_autoencoder()
    weights = tmp_path / "weights.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(weights))
    checkpoints = tmp_path / "checkpoints"
    convert([
        str(weights), "--architecture", "conv-autoencoder", "--config", '{"widths": [4, 4, 4], "latent_size": 8}',
        "--name", "my-ae", "--tasks", "reconstruct", "embed", "--out", str(checkpoints / "my-ae"),
    ])  # fmt: skip
    card = read_card(checkpoints / "my-ae")
    assert card.latent_size == 8 and card.weights_sha256

    mine = DefaultModels(embed="my-ae", reconstruct="my-ae")  # the other tasks' defaults are simply absent here
    settings = Settings(checkpoints_dir=checkpoints, device="cpu", preload="none", default_models=mine)
    square = np.zeros((28, 28), dtype=np.uint8)
    square[5:15, 8:18] = 255
    buffer = io.BytesIO()
    Image.fromarray(square).save(buffer, format="PNG")
    with TestClient(create_app(settings)) as client:
        listed = client.get("/v1/models").json()["data"]
        assert [entry["name"] for entry in listed] == ["my-ae"]
        response = client.post("/v1/embeddings", json={"images": [base64.b64encode(buffer.getvalue()).decode()]})
        assert response.status_code == 200, response.text
        served = np.array(response.json()["data"][0]["embedding"], dtype=np.float32)

    with torch.no_grad():
        expected = model.embed(torch.from_numpy(square / 255.0).float()[None, None]).flatten().numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)
