"""Super-resolution past FSRCNN: the residual network and its resumable pipeline, on generated pictures."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from photo_fixtures import run_rotation
from PIL import Image

from models.architectures import ResidualSR, ResidualSRConfig, build_model
from models.checkpoint import load_checkpoint, read_card
from models.train import main as train_main
from models.training import rotation
from models.training.photo import super_resolution as photo_sr


@pytest.fixture(scope="module")
def sr_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """T91, Train400 and Set5 folders of smooth generated pictures (colour and grey)."""
    root = tmp_path_factory.mktemp("sr")
    rows, columns = np.mgrid[0:100, 0:104].astype(np.float64)
    for folder, count in (("T91", 3), ("Train400", 2), ("Set5", 2)):
        (root / folder).mkdir()
        for index in range(count):
            planes = [128 + 90 * np.sin(rows / (7 + index + c) + columns / (11 + c)) for c in range(3)]
            pixels = np.stack(planes, axis=-1).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels[..., 0] if folder == "Train400" else pixels).save(root / folder / f"{index}.png")
    return root


def tiny(scale: int = 2) -> photo_sr.PhotoSRRecipe:
    recipe = photo_sr.PHOTO_SR_RECIPES[f"photo-sr-x{scale}"]
    return dataclasses.replace(
        recipe, config=ResidualSRConfig(scale=scale, features=8, blocks=1), patch=24, batch_size=2, warmup_steps=2
    )


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_untrained_it_is_bicubic_and_any_size_goes_through(scale: int) -> None:
    model = ResidualSR(ResidualSRConfig(scale=scale, features=8, blocks=2)).eval()
    low = torch.rand(2, 1, 13, 17)
    bicubic = torch.nn.functional.interpolate(low, scale_factor=scale, mode="bicubic", align_corners=False)
    assert torch.equal(model(low), bicubic)
    colour = model.super_resolve(torch.rand(1, 3, 9, 11))
    assert colour.shape == (1, 3, 9 * scale, 11 * scale) and 0.0 <= float(colour.min()) <= float(colour.max()) <= 1
    assert isinstance(build_model("residual-sr", model.config_dict()), ResidualSR)


def test_tiled_equals_untiled() -> None:
    torch.manual_seed(0)
    model = ResidualSR(ResidualSRConfig(scale=3, features=8, blocks=2)).eval()
    torch.nn.init.normal_(model.upsample[0].weight, std=0.1)  # a non-zero residual, so the margins matter
    low = torch.rand(1, 1, 70, 53)
    whole = model.upscale_luminance(low, tile=256)
    tiled = model.upscale_luminance(low, tile=2 * model.receptive_radius + 10)
    assert torch.allclose(whole, tiled, atol=1e-5)


def test_training_resumes_logs_validation_and_publishes(sr_data: Path, tmp_path: Path) -> None:
    recipe = tiny(2)
    common = {"threads": 1, "command": "test", "state_root": tmp_path / "state"}
    card = photo_sr.run(recipe, sr_data, tmp_path, None, 3, **common, publish="always")  # type: ignore[arg-type]
    assert card is not None and card.scale == 2 and card.tasks == ["super-resolve"]
    assert load_checkpoint(tmp_path / recipe.name).card.weights_sha256 == card.weights_sha256
    curve = card.training["validation_curve"]
    assert curve[0]["patch_passes"] == 0 and curve[-1]["patch_passes"] == 6
    assert {"model", "bicubic"} <= set(curve[0])  # Set5 Y PSNR of the weights' average and of Pillow's bicubic
    photo_sr.run(recipe, sr_data, tmp_path, None, 2, **common, publish="never")  # type: ignore[arg-type]
    run = json.loads((tmp_path / "state" / recipe.name / "run.json").read_text())
    assert run["step"] == 5 and run["patch_passes"] == 10 and len(run["validation"]) == 3
    assert read_card(tmp_path / recipe.name).weights_sha256 == card.weights_sha256  # never: not published
    common["threads"] = 2  # publish only: the card states the threads the weights were trained with
    card = photo_sr.run(recipe, sr_data, tmp_path, None, 0, **common, publish="always")  # type: ignore[arg-type]
    assert card is not None and card.training["torch_threads"] == 1


def test_the_rotation_takes_a_super_resolution_model_in_turn(
    sr_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rotation, "PHOTO_SR_RECIPES", {"photo-sr-x2": tiny(2)})
    code = run_rotation(
        [
            *("--data-dir", str(sr_data), "--out", str(tmp_path), "--state-dir", str(tmp_path / "s")),
            *("--chunk-minutes", "0.002", "--rounds", "2", "photo-sr-x2"),
        ]
    )
    assert code == 0 and not (tmp_path / "photo-sr-x2").exists()  # trained, never published
    run = json.loads((tmp_path / "s" / "photo-sr-x2" / "run.json").read_text())
    assert run["step"] >= 2 and len(run["validation"]) == 3  # the first point, then one at the end of each chunk


def test_command_line(sr_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["--data-dir", str(sr_data), "--out", str(tmp_path), "--state-dir", str(tmp_path / "s")]
    assert train_main(["photo-sr-x4", *arguments, "--steps", "1", "--publish", "always"]) == 0
    assert read_card(tmp_path / "photo-sr-x4").architecture == "residual-sr"
    assert "wrote" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main(["photo-sr-x2", *arguments])
    assert "--minutes" in capsys.readouterr().err
