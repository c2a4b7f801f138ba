"""The own-images pipeline: a task trained on a folder of one's own images, served as it is.

    python -m models.train --images-dir PATH --task reconstruct|denoise|super-resolve|vae --name NAME
                           [--size 32 | --size 64x48] [--channels 1|3] [--held-out 0.1] [--epochs N]
                           [--seed S] [--scale 2|4] [--latent-size D] [--out checkpoints] [--device cpu]

The folder is read by `models.data.image_folder` (its docstring has the rules); the recipe comes from
`models.training.recipes.image_folder_recipe` and is trained by the same loop as the MNIST recipes
(`models.training.loop.train`); the command line is `models.training.cli`. A seeded random share of
the images is held out: it selects the epoch and gives the figures in the model card (PSNR for the
image tasks, the negative ELBO for a VAE), so with few images those figures lean optimistic. The
card's input is the images' own size and channels, in the domain "user-images": the service takes
exactly that size (another size gets a 400 naming it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.architectures import Architecture, ConvVAE
from models.checkpoint import InputSpec, ModelCard
from models.data.image_folder import ImageFolder, format_size, hold_out
from models.training.finish import finish, recipe_card
from models.training.loop import ImageSplit, TrainOptions, TrainResult, train, training_run
from models.training.recipes import IMAGE_FOLDER_BATCH_SIZE, Recipe
from models.training.validation import BATCH, ValidationData, check_denoise, check_reconstruct, check_super_resolve

DOMAIN = "user-images"  # anything but "mnist": the service then neither frames nor resizes inputs
LICENCE = "unknown: user-supplied images"
DEFAULT_HELD_OUT = 0.1
# Without --epochs: at least this many epochs and optimiser steps. A small folder needs many epochs to get
# anywhere (300 synthetic 32x32 pictures, denoise: 60 steps left it worse than its noisy input, 1,200 steps
# put it 11 dB above it).
MIN_EPOCHS = 20
MIN_STEPS = 1_500


@dataclass
class FolderRun:
    """What to train and where the data comes from, as the command line gave it."""

    recipe: Recipe
    folder: ImageFolder
    held_out_fraction: float = DEFAULT_HELD_OUT
    command: str = ""  # the command line, for the card


def unlabelled(images: torch.Tensor, seed: int) -> ValidationData:
    """Hold-out images for the label-free checks (reconstruct, denoise, super-resolve read no labels)."""
    no_labels = torch.empty(0, dtype=torch.long)
    return ValidationData(images=images, labels=no_labels, index_images=images[:0], index_labels=no_labels, seed=seed)


@torch.no_grad()
def check_grey_level_elbo(model: Architecture, images: torch.Tensor, seed: int) -> dict[str, float]:
    """Mean negative ELBO (grey-level Bernoulli cross-entropy + KL, one posterior sample) in nats per image."""
    if not isinstance(model, ConvVAE):
        raise TypeError(f"the vae check needs a ConvVAE, got {type(model).__name__}")
    generator = torch.Generator().manual_seed(seed)
    terms = [model.loss(images[i : i + BATCH], generator=generator) for i in range(0, len(images), BATCH)]
    neg_elbo, reconstruction, kl = (torch.cat([term[k] for term in terms]) for k in range(3))
    return {
        "vae_negative_elbo_nats": float(neg_elbo.mean()),
        "vae_reconstruction_nats": float(reconstruction.mean()),
        "vae_kl_nats": float(kl.mean()),
    }


def held_out_checks(tasks: tuple[str, ...], model: Architecture, images: torch.Tensor, seed: int) -> dict[str, float]:
    """The label-free figures for the model's tasks on the held-out images (embeddings get none: no labels)."""
    model.eval()
    data, cpu = unlabelled(images, seed), torch.device("cpu")
    figures: dict[str, float] = {}
    if "reconstruct" in tasks:
        figures.update(check_reconstruct(model, data, cpu))
    if "denoise" in tasks:
        figures.update(check_denoise(model, data, cpu))
    if "super-resolve" in tasks:
        figures.update(check_super_resolve(model, data, cpu))
    if "vae" in tasks:
        figures.update(check_grey_level_elbo(model, images, seed))
    return {key: round(value, 4) for key, value in figures.items()}


def input_spec(recipe: Recipe, folder: ImageFolder) -> InputSpec:
    """What the service accepts: the images' size (divided by the scale for super-resolution)."""
    height, width = folder.size
    scale = (recipe.scale or 1) if "super-resolve" in recipe.tasks else 1
    return InputSpec(channels=folder.channels, height=height // scale, width=width // scale, domain=DOMAIN)


def protocol(tasks: tuple[str, ...], seed: int) -> str:
    """How the held-out figures were measured, in words, for the card."""
    parts = []
    if {"reconstruct", "denoise", "super-resolve"} & set(tasks):
        parts.append("PSNR in dB (peak 1.0), the mean over images")
    if "denoise" in tasks:
        parts.append(f"noisy = clip(clean + sigma * N(0, 1), 0, 1) with noise seed {seed}")
    if "super-resolve" in tasks:
        parts.append("low-resolution inputs area-downscaled; bicubic upscaling as the baseline")
    if "vae" in tasks:
        parts.append(f"negative ELBO in nats per image with one posterior sample (seed {seed}), grey-level targets")
    return "; ".join(parts)


def folder_model_card(
    run: FolderRun, result: TrainResult, split: ImageSplit, device: str, figures: dict[str, float]
) -> ModelCard:
    recipe, folder = run.recipe, run.folder
    held_out = (
        f"{len(split.validation_images)} held-out images ({run.held_out_fraction:.0%} of the folder, drawn with "
        f"seed {result.seed}): epoch selection and the metrics"
    )
    training: dict[str, Any] = {
        "recipe": f"image-folder/{recipe.tasks[0]}",
        "command": run.command,
        "dataset": folder.describe(),
        "licence": LICENCE,
        "train_images": len(split.train_images),
        "validation_images": held_out,
        **training_run(recipe, result, device),
        "validation": figures,
    }
    metrics = {
        "held_out": {
            "protocol": f"the {held_out}; {protocol(recipe.tasks, result.seed)}",
            "images": len(split.validation_images),
            "scores": figures,
        }
    }
    return recipe_card(
        recipe,
        result,
        input_spec(recipe, folder),
        training,
        normalization=f"pixels as float32 in [0, 1], {'RGB' if folder.channels == 3 else 'grayscale'}, "
        f"{format_size(folder.size)} training images",
        description=f"{recipe.description} Trained on {len(folder.files)} user-supplied images from "
        f"'{folder.root.name}'.",
        metrics=metrics,
    )


def train_folder(run: FolderRun, out: Path, options: TrainOptions) -> ModelCard:
    """Split, train, score the hold-out and write the checkpoint folder `out/<name>`."""
    seed = options.seed if options.seed is not None else run.recipe.seed
    train_indices, held_indices = hold_out(len(run.folder.images), run.held_out_fraction, seed)
    split = ImageSplit(train_images=run.folder.images[train_indices], validation_images=run.folder.images[held_indices])
    result = train(run.recipe, split, options)
    figures = held_out_checks(run.recipe.tasks, result.model, split.validation_images, result.seed)
    card = folder_model_card(run, result, split, options.device, figures)
    return finish(run.recipe, result, split, card, out)


def default_epochs(train_images: int, batch_size: int = IMAGE_FOLDER_BATCH_SIZE) -> int:
    """Enough epochs for MIN_STEPS optimiser steps, and at least MIN_EPOCHS."""
    steps_per_epoch = math.ceil(train_images / batch_size)
    return max(MIN_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch))
