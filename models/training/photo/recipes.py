"""The photo denoisers' recipes (data, network, schedule) and the patch sampler their training draws from
(models.training.photo.denoise trains them; models.training.photo.card writes their cards)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.architectures.ffdnet import FFDNetConfig

# The objectives a denoiser can train on (models.training.photo.denoise.patch_loss computes them).
PATCH_LOSSES = {
    # a sigma-75 patch's squared error is ~10x a sigma-15 one's, so high noise dominates the gradient
    "mse": "mean squared error per pixel (pixels in [0, 1])",
    # every patch's decibel counted alike: the gradient of a patch scales with 1 / its MSE
    "psnr": "the mean over patches of 10 log10(MSE + 1e-6), the patch's MSE per pixel (minus its PSNR)",
}


@dataclass(frozen=True)
class PhotoDenoiseRecipe:
    name: str  # the checkpoint folder
    description: str
    folder: str  # training images, under --data-dir
    validation_folder: str  # the learning curve's images (models.training.photo.validation)
    dataset_title: str
    config: FFDNetConfig
    patch: int = 50  # side of the training crops (even)
    batch_size: int = 32
    learning_rate: float = 1e-3  # Adam, peak; cosine decay to 1% of it (a run from scratch)
    # Continued training from served weights: constant after the warm-up (1e-4 cost the gray model 0.35 dB of
    # validation PSNR within 400 steps of leaving the cosine run's 1e-5, docs/model-report.md), and the
    # weights' exponential moving average is what is validated and published (an annealed snapshot at any time).
    continue_learning_rate: float = 5e-5
    continue_warmup_steps: int = 100
    average_decay: float = 0.999  # per step: the average spans ~1,000 steps
    upload_fraction: float = 0.5  # patches clipped to [0, 255] and rounded to 8 bits
    loss: str = "mse"  # one of PATCH_LOSSES
    held_out_images: int = 12  # the last images in name order: scored at the end, never trained on
    seed: int = 0


PHOTO_DENOISE_RECIPES: dict[str, PhotoDenoiseRecipe] = {
    recipe.name: recipe
    for recipe in (
        PhotoDenoiseRecipe(
            name="photo-denoise-gray",
            description="FFDNet denoiser for grayscale photographs, one network for Gaussian noise of sigma 0..75 "
            "(0..255 scale), given or estimated; float and 8-bit (clipped, rounded) noisy inputs; any size.",
            folder="Train400",
            validation_folder="BSD68",
            dataset_title="Train400: 400 grayscale 180x180 BSD images (the DnCNN training set, as published with "
            "cszn/DnCNN)",
            config=FFDNetConfig(channels=1, depth=15, width=64),
        ),
        PhotoDenoiseRecipe(
            name="photo-denoise-color",
            description="FFDNet denoiser for colour photographs, one network for Gaussian noise of sigma 0..75 "
            "(0..255 scale, the same on R, G and B), given or estimated; float and 8-bit noisy inputs; any size; "
            "all three channels in one pass.",
            folder="CBSD432",
            validation_folder="CBSD68",
            dataset_title="CBSD432: the 432 colour BSD images outside CBSD68 (as published in Magauiya/Extended_SURE)",
            config=FFDNetConfig(channels=3, depth=12, width=96),
        ),
    )
}


class PatchSampler:
    """Random crops with a random flip/rotation, drawn from uint8 images held in memory."""

    def __init__(self, images: list[np.ndarray], patch: int, generator: torch.Generator) -> None:
        self.images = [torch.from_numpy(np.array(image if image.ndim == 3 else image[..., None])) for image in images]
        self.patch = patch
        self.generator = generator

    def draw(self, count: int) -> torch.Tensor:
        """-> (count, C, patch, patch) float32 in [0, 1]."""
        picks = torch.randint(0, len(self.images), (count,), generator=self.generator).tolist()
        turns = torch.randint(0, 8, (count,), generator=self.generator).tolist()
        patches = []
        for index, turn in zip(picks, turns, strict=True):
            image = self.images[index]  # (H, W, C) uint8
            top = int(torch.randint(0, image.shape[0] - self.patch + 1, (1,), generator=self.generator))
            left = int(torch.randint(0, image.shape[1] - self.patch + 1, (1,), generator=self.generator))
            crop = image[top : top + self.patch, left : left + self.patch].permute(2, 0, 1)
            crop = torch.rot90(crop, turn % 4, dims=(1, 2))
            patches.append(crop.flip(2) if turn >= 4 else crop)
        return torch.stack(patches).float() / 255.0
