"""Replacing a loaded model by its folder's new checkpoint (ModelRegistry.replace, POST /v1/models/{name}/reload):
the new weights serve once warmed up, a broken or incompatible replacement is refused with 409 and the old
weights keep serving, and /v1/models shows the sha256 that serves."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from conftest import make_settings
from drawn_digits import digit_batch, png_bytes
from fastapi.testclient import TestClient
from service_helpers import assert_error, multipart

from app.main import create_app
from models.checkpoint import load_checkpoint, save_checkpoint

DIGIT = png_bytes(digit_batch(1, seed=7)[0])
ADMIN = {"Authorization": "Bearer admin-key"}


@pytest.fixture
def own_checkpoints(checkpoints_dir: Path, tmp_path: Path) -> Path:
    """A copy of the tiny checkpoints that a test may rewrite."""
    copy = tmp_path / "checkpoints"
    shutil.copytree(checkpoints_dir, copy)
    return copy


@pytest.fixture
def make_client(own_checkpoints: Path) -> Iterator[Callable[..., TestClient]]:
    """Started apps serving `own_checkpoints` with the management routes on; closed after the test."""
    clients: list[TestClient] = []

    def factory(**overrides: object) -> TestClient:
        settings = make_settings(own_checkpoints, admin_api_key="admin-key", **overrides)
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


def rewrite(directory: Path, change: Callable[[torch.nn.Module], None], **card_changes: object) -> str:
    """Write a new checkpoint into `directory` (each file by a rename); -> its weights' sha256."""
    checkpoint = load_checkpoint(directory)
    with torch.no_grad():
        change(checkpoint.model)
    card = checkpoint.card
    for name, value in card_changes.items():
        setattr(card, name, value)
    staging = directory.parent / f".{directory.name}.new"
    card = save_checkpoint(checkpoint.model, card, staging)
    for item in staging.iterdir():
        os.replace(item, directory / item.name)
    staging.rmdir()
    return str(card.weights_sha256)


def scale_weights(model: torch.nn.Module) -> None:
    for parameter in model.parameters():
        parameter.mul_(1.1)


def test_a_new_checkpoint_serves_after_reload_and_the_listing_shows_its_sha256(
    make_client: Callable[..., TestClient], own_checkpoints: Path
) -> None:
    client = make_client()
    before = client.post("/v1/denoise", files=multipart(DIGIT)).content
    old_sha = client.get("/v1/models/tiny-denoise").json()["sha256"]
    new_sha = rewrite(own_checkpoints / "tiny-denoise", scale_weights)

    answer = client.post("/v1/models/tiny-denoise/reload", headers=ADMIN)

    assert answer.status_code == 200, answer.text
    assert answer.json()["sha256"] == new_sha != old_sha
    assert client.get("/v1/models/tiny-denoise").json()["sha256"] == new_sha
    after = client.post("/v1/denoise", files=multipart(DIGIT))
    assert after.status_code == 200 and after.content != before  # the new weights answer
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("breakage", ["truncated weights", "sha256 mismatch", "interface change"])
def test_a_broken_or_incompatible_replacement_is_refused_and_the_old_weights_keep_serving(
    make_client: Callable[..., TestClient], own_checkpoints: Path, breakage: str
) -> None:
    client = make_client()
    before = client.post("/v1/denoise", files=multipart(DIGIT)).content
    old_sha = client.get("/v1/models/tiny-denoise").json()["sha256"]
    directory = own_checkpoints / "tiny-denoise"
    weights = directory / "model.safetensors"
    if breakage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif breakage == "sha256 mismatch":
        rewrite(directory, scale_weights)
        weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    else:
        rewrite(directory, scale_weights, tasks=["denoise"])  # it no longer reconstructs nor embeds

    error = assert_error(client.post("/v1/models/tiny-denoise/reload", headers=ADMIN), 409, "replacement_refused")

    assert old_sha in error["message"]  # says which weights keep serving
    assert client.get("/v1/models/tiny-denoise").json()["sha256"] == old_sha
    again = client.post("/v1/denoise", files=multipart(DIGIT))
    assert again.status_code == 200 and again.content == before
    assert client.get("/readyz").status_code == 200


def test_reload_of_a_model_that_is_not_loaded_rereads_its_card(
    make_client: Callable[..., TestClient], own_checkpoints: Path
) -> None:
    client = make_client()
    assert client.get("/v1/models/tiny-vae-3d").json()["state"] == "not_loaded"
    new_sha = rewrite(own_checkpoints / "tiny-vae-3d", scale_weights)

    answer = client.post("/v1/models/tiny-vae-3d/reload", headers=ADMIN)

    assert answer.status_code == 200 and answer.json()["sha256"] == new_sha
    assert answer.json()["state"] == "not_loaded"
    assert client.post("/v1/vae/sample", json={"n": 1, "model": "tiny-vae-3d"}).status_code == 200
