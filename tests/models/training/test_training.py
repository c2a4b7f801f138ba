"""Training on tiny generated data: every recipe runs a step and writes a loadable checkpoint."""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from models.checkpoint import load_checkpoint
from models.data.mnist import MNIST_LICENCE, MnistSplit
from models.train import main
from models.training import TrainingData, TrainOptions, run, train
from models.training.recipes import RECIPES, Recipe

TASK_METHODS = {"reconstruct": "reconstruct", "embed": "embed", "denoise": "denoise", "super-resolve": "super_resolve"}


def generated_digits(count: int = 48, seed: int = 0) -> MnistSplit:
    """Blurry random blobs standing in for digits, with labels 0-9."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 1, 7, 7, generator=generator)
    images = torch.nn.functional.interpolate(coarse, size=(28, 28), mode="bilinear", align_corners=False)
    return MnistSplit(images=images, labels=torch.arange(count) % 10)


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return TrainingData.hold_out(generated_digits(), validation_size=12)


def quiet(**kwargs: object) -> TrainOptions:
    return TrainOptions(stream=io.StringIO(), **kwargs)  # type: ignore[arg-type]


MNIST_RECIPES = sorted(name for name, recipe in RECIPES.items() if recipe.dataset == "mnist")


@pytest.mark.parametrize("name", MNIST_RECIPES)
def test_every_recipe_trains_one_step_and_writes_a_checkpoint(name: str, data: TrainingData, tmp_path: Path) -> None:
    recipe = RECIPES[name]
    stream = io.StringIO()
    card = run(recipe, data, tmp_path, TrainOptions(epochs=1, max_steps_per_epoch=1, stream=stream))
    directory = tmp_path / name

    checkpoint = load_checkpoint(directory)  # the sha256 and the weights are checked on the way
    assert checkpoint.card == card
    assert card.tasks == list(recipe.tasks)
    assert (card.input.height, card.input.width, card.input.domain) == (recipe.input_size, recipe.input_size, "mnist")
    assert card.scale == recipe.scale and card.latent_size == recipe.latent_size
    training = card.training
    assert training["recipe"] == name and training["dataset"] == "MNIST" and training["licence"] == MNIST_LICENCE
    last_stage_epochs = recipe.fine_tune.epochs if recipe.fine_tune else 1  # --epochs is the first stage's
    assert training["epochs"] == last_stage_epochs and training["seed"] == recipe.seed and training["device"] == "cpu"
    assert training["torch_version"] == torch.__version__
    for key in ("batch_size", "optimiser", "learning_rate", "duration_s", "final_train_loss", "cpu", "validation"):
        assert key in training, key
    assert isinstance(training["final_train_loss"], float)
    trained_at = card.trained_at()  # `created` of /v1/models: the run ended moments ago
    assert trained_at is not None and abs((datetime.datetime.now(datetime.UTC) - trained_at).total_seconds()) < 600
    assert "img/s" in stream.getvalue() and "loss" in stream.getvalue()

    low = torch.rand(2, 1, recipe.input_size, recipe.input_size)
    for task in card.tasks:
        if task in TASK_METHODS:
            output = getattr(checkpoint.model, TASK_METHODS[task])(low)
            assert output.shape[0] == 2
    for figure in ("samples.png", "loss.png"):
        with Image.open(directory / figure) as image:
            assert image.format == "PNG" and image.width > 50


def test_card_is_plain_json(data: TrainingData, tmp_path: Path) -> None:
    run(RECIPES["mnist-sr-x4"], data, tmp_path, quiet(epochs=1, max_steps_per_epoch=1))
    card = json.loads((tmp_path / "mnist-sr-x4" / "config.json").read_text())
    assert card["input"] == {"channels": 1, "height": 7, "width": 7, "domain": "mnist"}
    assert card["training"]["objective"] == "super-resolution" and card["training"]["scale"] == 4


def small(recipe: Recipe) -> Recipe:
    return dataclasses.replace(recipe, batch_size=8)


def test_training_is_reproducible_and_the_seed_matters(data: TrainingData) -> None:
    recipe = small(RECIPES["mnist-denoise"])
    first = train(recipe, data, quiet(epochs=2, max_steps_per_epoch=2))
    again = train(recipe, data, quiet(epochs=2, max_steps_per_epoch=2))
    other = train(recipe, data, quiet(epochs=2, max_steps_per_epoch=2, seed=1))
    for key, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[key]), key
    assert first.train_curve == again.train_curve
    assert any(not torch.equal(t, other.model.state_dict()[k]) for k, t in first.model.state_dict().items())


def test_vae_training_is_reproducible(data: TrainingData) -> None:
    recipe = small(RECIPES["mnist-vae-2d"])
    first = train(recipe, data, quiet(epochs=1, max_steps_per_epoch=2))
    again = train(recipe, data, quiet(epochs=1, max_steps_per_epoch=2))
    assert first.validation_losses == again.validation_losses
    for key, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[key]), key


def test_a_two_stage_recipe_fine_tunes_its_first_stage_and_the_card_tells_both(
    data: TrainingData, tmp_path: Path
) -> None:
    shipped = RECIPES["mnist-vae"]  # the ELBO, then the importance-weighted bound; narrower here, for speed
    recipe = small(dataclasses.replace(shipped, architecture_config={"latent_size": 4, "widths": (4, 8)}))
    assert recipe.fine_tune is not None
    both = run(recipe, data, tmp_path / "both", quiet(epochs=2, max_steps_per_epoch=2)).training
    assert both["objective"] == recipe.fine_tune.objective.name != recipe.objective.name
    assert both["epochs"] == recipe.fine_tune.epochs and both["learning_rate"] == recipe.fine_tune.learning_rate
    first = both["initialised_from"]["first_stage"]
    assert first["objective"] == recipe.objective.name and first["epochs"] == 2
    assert first["learning_rate"] == recipe.learning_rate and first["duration_s"] >= 0  # rounded to 0.1 s
    assert "--epochs 2" in both["command"] and "--init-from" not in both["command"]

    # The first stage's weights given, only the second stage runs, from them: the same weights as the one
    # command made, and a card that names what it started from.
    first_only = dataclasses.replace(recipe, fine_tune=None)
    first_card = run(first_only, data, tmp_path / "first", quiet(epochs=2, max_steps_per_epoch=2))
    start = tmp_path / "first" / "mnist-vae"
    second = run(recipe, data, tmp_path / "second", quiet(init_from=start, max_steps_per_epoch=2))
    assert second.training["initialised_from"]["sha256"] == first_card.weights_sha256
    assert f"--init-from {start}" in second.training["command"]
    assert second.training["objective"] == both["objective"] and second.training["epochs"] == both["epochs"]
    one_command = load_checkpoint(tmp_path / "both" / "mnist-vae").model.state_dict()
    for key, tensor in load_checkpoint(tmp_path / "second" / "mnist-vae").model.state_dict().items():
        assert torch.equal(tensor, one_command[key]), key


def test_a_recipe_without_a_second_stage_has_none_to_give() -> None:
    with pytest.raises(ValueError, match="no fine-tune stage"):
        RECIPES["mnist-ae"].fine_tune_stage()


def test_loss_goes_down_and_the_best_epoch_is_kept(data: TrainingData) -> None:
    recipe = dataclasses.replace(RECIPES["mnist-sr-x2"], batch_size=12, learning_rate=3e-3)
    result = train(recipe, data, quiet(epochs=6))
    assert result.train_curve[-1][1] < result.train_curve[0][1]
    assert result.validation_losses[result.selected_epoch - 1] == min(result.validation_losses)


def test_recipes_promise_what_their_models_do() -> None:
    mnist = {"mnist-ae", "mnist-denoise", "mnist-sr-x2", "mnist-sr-x4", "mnist-vae-2d", "mnist-vae", "mnist-cvae"}
    mnist |= {"mnist-classifier"}
    assert set(MNIST_RECIPES) == mnist
    natural = {f"bsd-denoise-sigma{sigma}" for sigma in (15, 25, 50)} | {f"t91-sr-x{scale}" for scale in (2, 3, 4)}
    assert set(RECIPES) - set(MNIST_RECIPES) == natural
    assert RECIPES["mnist-sr-x2"].input_size == 14 and RECIPES["mnist-sr-x2"].scale == 2
    assert RECIPES["mnist-sr-x4"].input_size == 7 and RECIPES["mnist-sr-x4"].scale == 4
    assert RECIPES["mnist-vae-2d"].latent_size == 2
    assert RECIPES["mnist-vae"].latent_size in (16, 32)
    for name, recipe in RECIPES.items():
        assert recipe.name == name


def test_hold_out_takes_the_last_digits() -> None:
    split = generated_digits(20)
    data = TrainingData.hold_out(split, validation_size=5)
    assert torch.equal(data.validation_images, split.images[15:]) and torch.equal(data.train_images, split.images[:15])
    with pytest.raises(ValueError, match="validation_size"):
        TrainingData.hold_out(split, validation_size=20)


def test_cli_lists_recipes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    listing = capsys.readouterr().out
    for name in RECIPES:
        assert name in listing


def test_cli_says_how_to_pass_the_data(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["mnist-ae"])
    assert exit_info.value.code == 2
    assert "--data-dir" in capsys.readouterr().err


def test_cli_refuses_an_unknown_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["mnist-gan", "--data-dir", "."])
    assert "invalid choice" in capsys.readouterr().err


def test_cli_reports_missing_data_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mnist-ae", "--data-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert str(tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
