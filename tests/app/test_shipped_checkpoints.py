"""The service on the shipped checkpoints, when they are present (skipped otherwise).

The rest of tests/app never needs them; these check that the real models, served as documented in
docs/api.md, do what the examples promise. Point AE_REAL_CHECKPOINTS_DIR elsewhere to try other ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from drawn_digits import decode_png, png_bytes
from fastapi.testclient import TestClient
from service_helpers import mse, multipart

from app.main import create_app
from app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = Path(os.environ.get("AE_REAL_CHECKPOINTS_DIR", REPO_ROOT / "checkpoints"))
EXAMPLES = REPO_ROOT / "docs" / "examples"
NEEDED = ("mnist-denoise", "mnist-ae")
JPEG = {"content-type": "image/jpeg"}

pytestmark = pytest.mark.skipif(
    not all((CHECKPOINTS / name / "model.safetensors").is_file() for name in NEEDED),
    reason=f"the shipped checkpoints {NEEDED} are not in {CHECKPOINTS}",
)


@pytest.fixture(scope="module")
def shipped() -> Iterator[TestClient]:
    settings = Settings(checkpoints_dir=CHECKPOINTS, device="cpu", preload="none")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_the_documented_noisy_example_is_denoised(shipped: TestClient) -> None:
    clean, noisy = decode_png((EXAMPLES / "digit.png").read_bytes()), decode_png((EXAMPLES / "noisy.png").read_bytes())
    response = shipped.post("/v1/denoise", files=multipart((EXAMPLES / "noisy.png").read_bytes()))
    assert response.status_code == 200
    assert mse(decode_png(response.content), clean) < 0.5 * mse(noisy, clean)


def test_a_photo_of_a_digit_reconstructs_like_a_digit(shipped: TestClient) -> None:
    def score(response: httpx.Response) -> float:
        assert response.status_code == 200, response.text
        return float(response.headers["x-reconstruction-error"])

    photo = shipped.post("/v1/reconstruct", content=(EXAMPLES / "photo.jpg").read_bytes(), headers=JPEG)
    assert photo.headers["x-preprocessing"] == "mnist-frame"
    noise = np.random.default_rng(0).random((28, 28))
    digit_score = score(shipped.post("/v1/reconstruct", files=multipart((EXAMPLES / "digit.png").read_bytes())))
    noise_score = score(shipped.post("/v1/reconstruct", files=multipart(png_bytes(noise))))
    assert score(photo) < noise_score / 3, (score(photo), digit_score, noise_score)
