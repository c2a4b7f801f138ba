"""Train the natural-image recipes (denoising on Train400, super-resolution on T91) into checkpoints.

    python -m models.train bsd-denoise-sigma25 --data-dir /work/shared/datasets [--epochs N] [--device cuda]
    python -m models.train t91-sr-x2 --data-dir /work/shared/datasets

`--data-dir` is the folder holding `Train400/` and `T91/` (see that folder's README for provenance and
licences). The images are cut into square patches once (grayscale for Train400, the Y channel of
BT.601 YCbCr for T91); the objective flips/rotates each patch at random and corrupts it (noise, or
Pillow-bicubic downscaling), so every epoch sees new pairs. The last images of the folder, in file-name
order, are held out: their patches choose the epoch kept. The loop is `models.training.loop.train`, the same
as for the MNIST recipes. The card says domain "natural", any size, RGB (grayscale pictures are served as
RGB with equal channels), what trained the weights, under which terms, how long it took and on what.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.checkpoint import InputSpec, ModelCard
from models.data.natural_images import load_images, luminance
from models.training.finish import finish, recipe_card
from models.training.loop import ImageSplit, TrainOptions, TrainResult, train, training_run
from models.training.recipes import Recipe


@dataclass(frozen=True)
class NaturalDataset:
    folder: str  # under --data-dir
    title: str
    licence: str
    patch: int  # side of the square training patches (high-resolution side for super-resolution)
    stride: int  # between patch corners
    held_out_images: int  # the last images in name order: model selection only


NATURAL_DATASETS: dict[str, NaturalDataset] = {
    "train400": NaturalDataset(
        folder="Train400",
        title="Train400: 400 grayscale 180x180 BSD images (the DnCNN training set, as published with cszn/DnCNN)",
        licence="BSD-derived images offered by UC Berkeley for non-commercial research and educational purposes; "
        "used here to train the weights, not redistributed (no image is in this repository)",
        patch=40,
        stride=20,
        held_out_images=20,
    ),
    "t91": NaturalDataset(
        folder="T91",
        title="T91: 91 RGB images (the SRCNN training set, as published with tegg89/SRCNN-Tensorflow), Y channel",
        licence="no stated licence; used here for research training only, not redistributed (no image is in this "
        "repository)",
        patch=48,
        stride=16,
        held_out_images=5,
    ),
}


def cut_patches(image: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """(1, 1, H, W) -> (N, 1, patch, patch): every patch whose corner is on the stride grid."""
    if min(image.shape[-2:]) < patch:
        return image.new_empty((0, 1, patch, patch))
    tiles = image.unfold(2, patch, stride).unfold(3, patch, stride)  # (1, 1, rows, columns, patch, patch)
    return tiles.reshape(-1, 1, patch, patch).contiguous()


@dataclass
class Patches:
    split: ImageSplit
    train_images: int  # images the training patches come from
    held_out_images: int  # images the validation patches come from


def held_out_count(dataset: NaturalDataset, images: int) -> int:
    """The dataset's held-out count, or a fifth of a small folder (at least one image)."""
    return min(dataset.held_out_images, max(1, images // 5))


def load_patches(data_dir: Path, dataset: NaturalDataset, limit_images: int | None = None) -> Patches:
    """Patches of the training images and of the held-out ones (the last images in name order)."""
    images = load_images(Path(data_dir) / dataset.folder)[:limit_images]
    held_out = held_out_count(dataset, len(images))
    planes = [luminance(image.pixels) for image in images]  # (1, 1, H, W) each, grayscale or Y
    train_patches = [cut_patches(plane, dataset.patch, dataset.stride) for plane in planes[:-held_out]]
    # Held-out patches do not overlap: fewer, independent pairs.
    held_patches = [cut_patches(plane, dataset.patch, dataset.patch) for plane in planes[-held_out:]]
    split = ImageSplit(train_images=torch.cat(train_patches), validation_images=torch.cat(held_patches))
    return Patches(split, len(images) - held_out, held_out)


def natural_model_card(recipe: Recipe, result: TrainResult, patches: Patches, device: str, command: str) -> ModelCard:
    dataset, split = NATURAL_DATASETS[recipe.dataset], patches.split
    training: dict[str, Any] = {
        "recipe": recipe.name,
        "command": command,
        "dataset": dataset.title,
        "licence": dataset.licence,
        "train_images": patches.train_images,
        "train_patches": f"{len(split.train_images)} patches of {dataset.patch}x{dataset.patch}, "
        f"stride {dataset.stride}",
        "validation_images": f"{len(split.validation_images)} patches of the last {patches.held_out_images} images "
        "in name order (model selection only)",
        "augmentation": "one of the 8 flips/rotations at random per patch and step",
        **training_run(recipe, result, device, loss_digits=8),
    }
    colour = (
        "colour pictures are denoised channel by channel (R, G, B each as a grayscale image)"
        if "denoise" in recipe.tasks
        else "the network upscales the luminance (Y of BT.601 YCbCr); Cb and Cr are upscaled bicubically; RGB out"
    )
    spec = InputSpec(channels=3, height=None, width=None, domain="natural")
    normalization = f"pixels as float32 in [0, 1], RGB, any size (tiled inference); {colour}"
    return recipe_card(recipe, result, spec, training, normalization=normalization)


def run_natural(
    recipe: Recipe, data_dir: Path, out: Path, options: TrainOptions, command: str, limit_images: int | None = None
) -> ModelCard:
    """Cut the patches, train, and write the checkpoint folder `out/<recipe name>`."""
    patches = load_patches(data_dir, NATURAL_DATASETS[recipe.dataset], limit_images)
    result = train(recipe, patches.split, options)
    card = natural_model_card(recipe, result, patches, options.device, command)
    return finish(recipe, result, patches.split, card, out)
