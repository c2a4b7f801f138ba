"""GET /v1/vae/latent-map: the posterior means kept beside a 2-D VAE's weights, and models/latent_map.py."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import make_settings
from drawn_digits import digit_batch
from fastapi.testclient import TestClient
from service_helpers import assert_error

from app.main import create_app
from models.checkpoint import load_checkpoint
from models.latent_map import (
    LATENT_MAP_FILE,
    LatentMapError,
    compute_latent_map,
    read_latent_map,
    write_latent_map,
)

LABELS = torch.arange(12) % 10


def map_of(directory: Path, images: torch.Tensor) -> None:
    checkpoint = load_checkpoint(directory)
    latent_map = compute_latent_map(
        checkpoint.model,
        images,
        LABELS,
        model=checkpoint.card.name,
        weights_sha256=checkpoint.card.weights_sha256,
        source="12 drawn test digits",
    )
    write_latent_map(directory, latent_map)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return digit_batch(12, seed=5)


@pytest.fixture(scope="module")
def mapped(
    checkpoints_dir: Path, digits: torch.Tensor, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """The service on copies of the tiny VAEs: tiny-vae-2d with a map, a copy of it with a stale map, one without."""
    root = tmp_path_factory.mktemp("latent-maps")
    for name in ("tiny-vae-2d", "tiny-vae-3d", "tiny-ae"):
        shutil.copytree(checkpoints_dir / name, root / name)
    map_of(root / "tiny-vae-2d", digits)
    shutil.copytree(root / "tiny-vae-2d", root / "stale-vae-2d")
    card = json.loads((root / "stale-vae-2d" / "config.json").read_text())
    card["name"] = "stale-vae-2d"
    (root / "stale-vae-2d" / "config.json").write_text(json.dumps(card))
    stale = json.loads((root / "stale-vae-2d" / LATENT_MAP_FILE).read_text())
    stale["weights_sha256"] = "0" * 64  # as if the weights had been retrained since the map was made
    (root / "stale-vae-2d" / LATENT_MAP_FILE).write_text(json.dumps(stale))
    shutil.copytree(root / "tiny-vae-2d", root / "unmapped-vae-2d")
    card["name"] = "unmapped-vae-2d"
    (root / "unmapped-vae-2d" / "config.json").write_text(json.dumps(card))
    (root / "unmapped-vae-2d" / LATENT_MAP_FILE).unlink()
    defaults = {"denoise": "tiny-ae", "super_resolve": "tiny-ae", "reconstruct": "tiny-ae", "embed": "tiny-ae"}
    defaults |= {"vae": "tiny-vae-2d", "manifold": "tiny-vae-2d"}
    settings = make_settings(root, default_models=defaults, preload="none")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_the_map_holds_the_posterior_means_the_encoder_gives(mapped: TestClient, digits: torch.Tensor) -> None:
    from drawn_digits import png_bytes

    response = mapped.get("/v1/vae/latent-map")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "latent_map" and body["model"] == "tiny-vae-2d" and body["count"] == 12
    assert body["labels"] == LABELS.tolist() and body["source"] == "12 drawn test digits"
    # The points are where /v1/vae/encode puts the same images (to the map's rounding).
    files = [("image", (f"{i}.png", png_bytes(digits[i, 0]), "image/png")) for i in (0, 7)]
    means = [item["mean"] for item in mapped.post("/v1/vae/encode?preprocess=none", files=files).json()["data"]]
    for index, mean in zip((0, 7), means, strict=True):
        assert body["x"][index] == pytest.approx(mean[0], abs=2e-3)
        assert body["y"][index] == pytest.approx(mean[1], abs=2e-3)


def test_a_model_is_named_in_the_query(mapped: TestClient) -> None:
    assert mapped.get("/v1/vae/latent-map", params={"model": "tiny-vae-2d"}).json()["count"] == 12


def test_a_model_without_a_map_is_a_404_saying_how_to_make_one(mapped: TestClient) -> None:
    error = assert_error(mapped.get("/v1/vae/latent-map?model=unmapped-vae-2d"), 404, "not_found")
    assert "python -m models.latent_map unmapped-vae-2d" in error["message"] and error["param"] == "model"


def test_a_map_of_other_weights_is_refused(mapped: TestClient) -> None:
    error = assert_error(mapped.get("/v1/vae/latent-map?model=stale-vae-2d"), 404, "not_found")
    assert "other weights" in error["message"]


@pytest.mark.parametrize(
    ("model", "status", "type_"),
    [
        ("tiny-vae-3d", 400, "task_not_supported"),  # a VAE, but its latent space is 3-D
        ("tiny-ae", 400, "task_not_supported"),  # not a VAE at all
        ("nope", 404, "model_not_found"),
    ],
)
def test_bad_models_are_4xx(mapped: TestClient, model: str, status: int, type_: str) -> None:
    assert_error(mapped.get("/v1/vae/latent-map", params={"model": model}), status, type_)


def test_the_map_is_only_read(mapped: TestClient) -> None:
    assert mapped.post("/v1/vae/latent-map").status_code == 405


def test_the_map_needs_the_api_key_when_keys_are_on(make_client: object) -> None:
    client = make_client(api_keys=["k1"], preload="none")  # type: ignore[operator]
    assert_error(client.get("/v1/vae/latent-map"), 401, "unauthorized")


def test_a_map_round_trips_through_its_file(tmp_path: Path) -> None:
    from models.latent_map import LatentMap

    original = LatentMap("m", "ab" * 32, "three points", [0.1, -0.2, 3.0], [1.0, 2.0, -3.5], [1, 2, 3])
    write_latent_map(tmp_path, original)
    assert read_latent_map(tmp_path) == original


def test_broken_map_files_are_errors_naming_the_file(tmp_path: Path) -> None:
    from models.latent_map import LatentMap

    with pytest.raises(LatentMapError, match="missing"):
        read_latent_map(tmp_path)
    (tmp_path / LATENT_MAP_FILE).write_text("{not json")
    with pytest.raises(LatentMapError, match=LATENT_MAP_FILE):
        read_latent_map(tmp_path)
    (tmp_path / LATENT_MAP_FILE).write_text(json.dumps({"model": "m", "weights_sha256": "", "source": "s", "x": [1]}))
    with pytest.raises(LatentMapError, match="lacks the field 'y'"):
        read_latent_map(tmp_path)
    with pytest.raises(LatentMapError, match="differ in length"):
        LatentMap("m", "", "s", [1.0], [1.0, 2.0], [1])


def test_only_a_2d_latent_space_can_be_mapped(checkpoints_dir: Path, digits: torch.Tensor) -> None:
    model = load_checkpoint(checkpoints_dir / "tiny-vae-3d").model
    with pytest.raises(LatentMapError, match="2-D"):
        compute_latent_map(model, digits, LABELS, model="tiny-vae-3d", weights_sha256="", source="s")
    plain = torch.nn.Identity()  # no posterior means at all
    with pytest.raises(LatentMapError, match="no posterior means"):
        compute_latent_map(plain, digits, LABELS, model="x", weights_sha256="", source="s")


def test_the_shipped_2d_vae_has_a_current_map() -> None:
    """The file in checkpoints/ was made from the weights that ship beside it (else the service refuses it)."""
    directory = Path(__file__).resolve().parents[4] / "checkpoints" / "mnist-vae-2d"
    latent_map = read_latent_map(directory)
    card = json.loads((directory / "config.json").read_text())
    assert latent_map.weights_sha256 == card["weights_sha256"]
    assert len(latent_map.labels) == 5000 and set(latent_map.labels) == set(range(10))
