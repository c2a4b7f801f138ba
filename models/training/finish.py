"""The end of every training pipeline: the checkpoint folder (weights and card) and its figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from models.checkpoint import InputSpec, ModelCard, save_checkpoint
from models.training.loop import ImageSplit, TrainResult, make_generator
from models.training.plots import image_grid, loss_curve
from models.training.recipes import Recipe

SAMPLE_COUNT = 12  # columns of samples.png


def recipe_card(
    recipe: Recipe, result: TrainResult, input_spec: InputSpec, training: dict[str, Any], **fields: Any
) -> ModelCard:
    """The model card of a trained recipe: what every pipeline fills from the recipe and the run (name,
    tasks, architecture and config, scale, latent size, description), its input spec and training facts;
    `fields`, the pipeline's own (normalization, metrics, another description)."""
    values: dict[str, Any] = {"description": recipe.description, **fields}
    return ModelCard(
        name=recipe.name,
        tasks=list(recipe.tasks),
        architecture=recipe.architecture,
        architecture_config=result.model.config_dict(),
        input=input_spec,
        scale=recipe.scale,
        latent_size=recipe.latent_size,
        training=training,
        **values,
    )


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
