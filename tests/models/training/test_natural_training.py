"""The natural-image recipes on tiny generated images: patches, one training step, the card, the CLI."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.checkpoint import load_checkpoint
from models.train import main
from models.training import TrainOptions
from models.training.objectives import PatchDenoising, PatchSuperResolution, random_dihedral
from models.training.photo.natural import NATURAL_DATASETS, cut_patches, load_patches, run_natural
from models.training.recipes import RECIPES

NATURAL_RECIPES = sorted(name for name, recipe in RECIPES.items() if recipe.dataset != "mnist")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six smooth random pictures in each training folder: grayscale PNG (Train400), RGB BMP (T91)."""
    root = tmp_path_factory.mktemp("datasets")
    generator = np.random.default_rng(0)
    for folder, shape, suffix in (("Train400", (64, 60), "png"), ("T91", (70, 66, 3), "bmp")):
        (root / folder).mkdir()
        for index in range(6):
            coarse = Image.fromarray(generator.integers(0, 256, (8, 8, *shape[2:]), dtype=np.uint8))
            coarse.resize((shape[1], shape[0]), Image.Resampling.BILINEAR).save(root / folder / f"{index}.{suffix}")
    return root


def test_cut_patches_on_the_stride_grid() -> None:
    image = torch.arange(100.0).view(1, 1, 10, 10)
    patches = cut_patches(image, 4, 3)  # corners at 0, 3, 6 on each axis
    assert patches.shape == (9, 1, 4, 4)
    assert torch.equal(patches[4], image[0, :, 3:7, 3:7])
    assert cut_patches(image, 12, 3).shape == (0, 1, 12, 12)


def test_load_patches_holds_out_the_last_images(data_dir: Path) -> None:
    patches = load_patches(data_dir, NATURAL_DATASETS["train400"])
    assert patches.held_out_images == 1 and patches.train_images == 5
    assert patches.split.train_images.shape[1:] == (1, 40, 40)
    assert len(patches.split.train_images) == 5 * 2 * 2  # 64x60: corners (0, 20) x (0, 20)


def test_dihedral_augmentation_only_moves_pixels() -> None:
    patches = torch.rand(16, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    moved = random_dihedral(patches, torch.Generator().manual_seed(1))
    assert torch.equal(moved.flatten(1).sort(dim=1).values, patches.flatten(1).sort(dim=1).values)
    assert not torch.equal(moved, patches)


def test_patch_objectives_make_the_documented_pairs() -> None:
    clean = torch.full((64, 1, 12, 12), 0.5)
    noisy, target = PatchDenoising(sigma=25.0).make_batch(clean, torch.Generator().manual_seed(0))
    assert torch.equal(target, clean)
    assert ((noisy - clean) * 255).std().item() == pytest.approx(25.0, rel=0.05)
    low, high = PatchSuperResolution(scale=3).make_batch(clean, torch.Generator().manual_seed(0))
    assert low.shape == (64, 1, 4, 4) and high.shape == clean.shape


@pytest.mark.parametrize("name", NATURAL_RECIPES)
def test_every_natural_recipe_trains_one_step(name: str, data_dir: Path, tmp_path: Path) -> None:
    recipe = RECIPES[name]
    options = TrainOptions(epochs=1, max_steps_per_epoch=1, stream=io.StringIO())
    card = run_natural(recipe, data_dir, tmp_path, options, command="test")
    checkpoint = load_checkpoint(tmp_path / name)
    assert checkpoint.card == card
    assert (card.input.channels, card.input.height, card.input.width, card.input.domain) == (3, None, None, "natural")
    assert "not redistributed" in card.training["licence"]
    assert card.training["device"] == "cpu" and card.training["duration_s"] >= 0
    photo = torch.rand(1, 3, 21, 17)
    if "denoise" in card.tasks:
        assert checkpoint.model.denoise(photo).shape == photo.shape
    else:
        assert card.scale == recipe.scale
        assert checkpoint.model.super_resolve(photo).shape == (1, 3, 21 * card.scale, 17 * card.scale)


def test_cli_trains_a_natural_recipe(data_dir: Path, tmp_path: Path) -> None:
    argv = ["t91-sr-x2", "--data-dir", str(data_dir), "--out", str(tmp_path), "--epochs", "1", "--threads", "1"]
    assert main(argv) == 0
    assert load_checkpoint(tmp_path / "t91-sr-x2").card.training["command"].startswith("python -m models.train")


def test_cli_names_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bsd-denoise-sigma25", "--data-dir", str(tmp_path)]) == 1
    assert "Train400" in capsys.readouterr().err


def test_fine_tuning_starts_from_the_given_checkpoint(data_dir: Path, tmp_path: Path) -> None:
    quiet = io.StringIO()
    start = run_natural(
        RECIPES["bsd-denoise-sigma25"],
        data_dir,
        tmp_path / "start",
        TrainOptions(epochs=1, max_steps_per_epoch=1, stream=quiet),
        command="test",
    )
    # A learning rate of zero leaves the weights where they started: exactly the checkpoint's, not the fresh
    # initialisation of another seed.
    options = TrainOptions(
        epochs=1,
        max_steps_per_epoch=1,
        stream=quiet,
        seed=7,
        init_from=tmp_path / "start" / start.name,
        learning_rate=0.0,
    )
    tuned = run_natural(RECIPES["bsd-denoise-sigma15"], data_dir, tmp_path / "tuned", options, command="test")
    started_from = tuned.training["initialised_from"]
    assert (started_from["checkpoint"], started_from["sha256"]) == (start.name, start.weights_sha256)
    assert started_from["training"]["duration_s"] == start.training["duration_s"]  # the history stays on the card
    assert tuned.training["learning_rate"] == 0.0
    # (batch norm's running statistics do move in a training step; the learned parameters do not)
    before = dict(load_checkpoint(tmp_path / "start" / start.name).model.named_parameters())
    after = dict(load_checkpoint(tmp_path / "tuned" / tuned.name).model.named_parameters())
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_fine_tuning_refuses_another_architecture(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_natural(
        RECIPES["t91-sr-x2"],
        data_dir,
        tmp_path,
        TrainOptions(epochs=1, max_steps_per_epoch=1, stream=io.StringIO()),
        command="test",
    )
    argv = [
        "bsd-denoise-sigma15",
        "--data-dir",
        str(data_dir),
        "--out",
        str(tmp_path),
        "--init-from",
        str(tmp_path / "t91-sr-x2"),
        "--epochs",
        "1",
        "--threads",
        "1",
    ]
    assert main(argv) == 1
    assert "cannot start recipe 'bsd-denoise-sigma15'" in capsys.readouterr().err
