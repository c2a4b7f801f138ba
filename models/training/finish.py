"""The end of every training pipeline: the checkpoint folder (weights and card) and its figures."""

from __future__ import annotations

from pathlib import Path

import torch

from models.checkpoint import ModelCard, save_checkpoint
from models.plots import image_grid, loss_curve
from models.recipes import Recipe
from models.training.loop import ImageSplit, TrainResult, make_generator

SAMPLE_COUNT = 12  # columns of samples.png


def finish(recipe: Recipe, result: TrainResult, split: ImageSplit, card: ModelCard, out: Path) -> ModelCard:
    """Write `out/<recipe name>/`: model.safetensors and config.json (the card, with the weights' sha256
    filled in), samples.png and loss.png; -> the card as saved."""
    directory = Path(out) / recipe.name
    card = save_checkpoint(result.model, card, directory)
    write_figures(recipe, result, split, directory)
    return card


@torch.no_grad()
def write_figures(recipe: Recipe, result: TrainResult, data: ImageSplit, directory: Path) -> None:
    """samples.png (inputs / outputs / targets on hold-out images) and loss.png."""
    clean = data.validation_images[:SAMPLE_COUNT]
    inputs, targets = recipe.objective.make_batch(clean, make_generator(result.seed + 4))
    rows = [("input", inputs), ("output", result.model(inputs)), ("target", targets)]
    image_grid(rows, directory / "samples.png")
    validation_points = [(float(epoch + 1), loss) for epoch, loss in enumerate(result.validation_losses)]
    log_scale = all(loss > 0 for _, loss in result.train_curve)
    loss_curve(
        [("train", result.train_curve), ("validation", validation_points)],
        directory / "loss.png",
        title=f"{recipe.name}: {recipe.objective.loss_name}",
        log_scale=log_scale,
    )
