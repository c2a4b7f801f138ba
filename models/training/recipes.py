"""The training recipes: one entry per checkpoint in `checkpoints/`, looked up by name.

A recipe is data: which architecture (and its config), what the model is trained to do (an
`Objective`), what the card will promise (tasks, input size) and the optimiser settings.
`python -m models.train <name>` trains exactly what is written here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from models.training.importance_weighted import ImportanceWeightedElbo
from models.training.objectives import (
    BernoulliElbo,
    BlindDenoising,
    Classification,
    GreyLevelElbo,
    LabelledElbo,
    Objective,
    PatchDenoising,
    PatchSuperResolution,
    Reconstruction,
    SuperResolution,
)


@dataclass(frozen=True)
class FineTune:
    """A second stage: the first stage's selected weights trained further on another objective, with a fresh
    Adam and its own cosine schedule (a VAE learnt on the ELBO, then on the tighter k-sample bound)."""

    objective: Objective
    epochs: int
    learning_rate: float


@dataclass(frozen=True)
class Recipe:
    name: str  # also the checkpoint folder name
    description: str
    tasks: tuple[str, ...]  # what the service may do with the result: card tasks (models.runtime.tasks.card_tasks)
    architecture: str  # a key of models.architectures.ARCHITECTURES
    architecture_config: dict[str, Any] = field(hash=False)
    objective: Objective = field(default_factory=Reconstruction)
    input_size: int = 28  # side of the square input image (the low-resolution side for super-resolution);
    # image-folder recipes leave it: their card takes the size from the images (models.training.own_images)
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3  # Adam, decayed to zero on a cosine over the whole run
    weight_decay: float = 0.0
    seed: int = 0
    # Where the training images come from: "mnist" (the IDX files) or a natural-image set of
    # models.training.photo.natural.NATURAL_DATASETS ("train400", "t91"), cut into patches.
    dataset: str = "mnist"
    fine_tune: FineTune | None = None  # a second stage after `epochs` of `objective` (loop.train_stages)

    def fine_tune_stage(self) -> Recipe:
        """The second stage as a recipe of its own (same name, data and architecture); only when it has one."""
        if self.fine_tune is None:
            raise ValueError(f"recipe {self.name!r} has no fine-tune stage")
        stage = self.fine_tune
        return dataclasses.replace(
            self, objective=stage.objective, epochs=stage.epochs, learning_rate=stage.learning_rate, fine_tune=None
        )

    @property
    def scale(self) -> int | None:
        scale = self.architecture_config.get("scale")
        return int(scale) if scale is not None else None

    @property
    def latent_size(self) -> int | None:
        latent = self.architecture_config.get("latent_size")
        return int(latent) if latent is not None else None


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            name="mnist-ae",
            description="Autoencoder with a 32-d dense bottleneck: reconstructions and compact embeddings.",
            tasks=("reconstruct", "embed"),
            architecture="conv-autoencoder",
            architecture_config={"widths": (32, 64, 64), "latent_size": 32},
            # Label-free regularisers that make Euclidean distances between codes meaningful (on the
            # hold-out, 4 epochs: plain 5-NN accuracy 0.93-0.95 < PCA-32's 0.972; with both, 0.972).
            objective=Reconstruction(input_shift_pixels=2, code_noise_sigma=0.2, code_penalty=1.0),
            epochs=10,
        ),
        Recipe(
            name="mnist-denoise",
            description="Blind denoiser for MNIST digits: zero-mean Gaussian noise, any sigma up to 0.6, clipped.",
            tasks=("denoise", "reconstruct"),
            architecture="conv-autoencoder",
            architecture_config={"widths": (32, 64, 128), "latent_size": None},
            objective=BlindDenoising(max_sigma=0.6),
            epochs=12,
        ),
        Recipe(
            name="mnist-sr-x2",
            description="Super-resolution x2 for MNIST digits: 14x14 (area-downscaled) -> 28x28.",
            tasks=("super-resolve",),
            architecture="sr-autoencoder",
            architecture_config={"scale": 2, "width": 32, "encoder_layers": 3},
            objective=SuperResolution(scale=2),
            input_size=14,
            epochs=5,
        ),
        Recipe(
            name="mnist-sr-x4",
            description="Super-resolution x4 for MNIST digits: 7x7 (area-downscaled) -> 28x28.",
            tasks=("super-resolve",),
            architecture="sr-autoencoder",
            architecture_config={"scale": 4, "width": 32, "encoder_layers": 3},
            objective=SuperResolution(scale=4),
            input_size=7,
            epochs=6,
        ),
        Recipe(
            name="mnist-vae-2d",
            description="Convolutional VAE with a 2-d latent space, to draw the latent map and the decoded manifold.",
            tasks=("vae", "reconstruct", "embed"),
            architecture="conv-vae",
            architecture_config={"latent_size": 2, "widths": (32, 64), "hidden_size": 256},
            objective=BernoulliElbo(kl_warmup_epochs=2),
            epochs=15,
        ),
        Recipe(
            name="mnist-vae",
            description="Convolutional VAE with a 16-d latent space on dynamically binarised MNIST, for sampling.",
            tasks=("vae", "reconstruct", "embed"),
            architecture="conv-vae",
            architecture_config={"latent_size": 16, "widths": (64, 128), "hidden_size": 512},
            # The levers (docs/vae-levers.json, NLL on test digits 5000-5999 with 200 importance samples): the
            # first recipe (widths 32/64, hidden 256, 50 epochs of the ELBO) scored 88.14 nats; twice the widths
            # learn faster per epoch (93.70 vs 97.63 at 5), and 50 epochs of them reach 86.57; 5 more epochs on
            # the 5-sample importance-weighted bound (models.training.importance_weighted) bring 85.88.
            objective=BernoulliElbo(kl_warmup_epochs=5),
            epochs=50,
            fine_tune=FineTune(ImportanceWeightedElbo(samples=5), epochs=5, learning_rate=3e-4),
        ),
        Recipe(
            name="mnist-cvae",
            description="Class-conditional convolutional VAE (8-d latent, the label into encoder and every decoder "
            "layer, each label's codes matched to the prior): samples of a chosen digit, and a digit redrawn as "
            "another in the same handwriting.",
            tasks=("conditional-vae",),
            architecture="conditional-conv-vae",
            # A first run (16-d latent, KL warmed up over 3 epochs, 20 epochs) let z carry the digit as well:
            # its samples were read as the asked digit only 76.7% of the time (Fréchet distance 209); 8-d and the
            # full KL from the start: 82.97% (242.7). The levers at 4 epochs each (docs/cvae-levers.md): a
            # smaller latent helps the label (2-d 91.5%) at the cost of the ELBO and the Fréchet distance; the
            # label into every decoder layer alone, a KL warm-up or beta 1.5 do not; what does is an MMD
            # between each label's codes and N(0, I) (InfoVAE), weight 100 nats (1000 collapses the posterior).
            architecture_config={
                "latent_size": 8,
                "classes": 10,
                "widths": (32, 64),
                "hidden_size": 256,
                "label_every_layer": True,
            },
            objective=LabelledElbo(kl_warmup_epochs=0, class_mmd_weight=100.0),
            epochs=12,
        ),
        Recipe(
            name="mnist-classifier",
            description="Digit classifier (a small CNN): the judge of generated samples, whose penultimate "
            "features give the Fréchet distance of models.evaluation.mnist.sample_quality.",
            tasks=("classify",),
            architecture="digit-classifier",
            architecture_config={"classes": 10, "widths": (32, 64), "feature_size": 128, "dropout": 0.3},
            objective=Classification(shift_pixels=2),
            epochs=4,
        ),
    )
}

# Natural images (issue 7). Denoising: one DnCNN-S network (17 layers, 64 channels, as published) per sigma,
# trained on Train400 patches; about 64 patches/s on 2 CPU cores, so 20 epochs of 25,600 patches take
# ~2.2 hours there (minutes on a GPU). Super-resolution: FSRCNN (d=56, s=12, m=4) with a sub-pixel
# upsampler and a bicubic skip, on the Y channel of T91 patches; ~2,000 patches/s on 2 CPU cores.
NATURAL_DENOISE_SIGMAS = (15, 25, 50)
NATURAL_SR_SCALES = (2, 3, 4)
for _sigma in NATURAL_DENOISE_SIGMAS:
    RECIPES[f"bsd-denoise-sigma{_sigma}"] = Recipe(
        name=f"bsd-denoise-sigma{_sigma}",
        description=f"DnCNN-S denoiser for photographs with white Gaussian noise of sigma {_sigma} (0..255 scale); "
        "any size; colour images channel by channel.",
        tasks=("denoise",),
        architecture="dncnn",
        architecture_config={"depth": 17, "width": 64, "batch_norm": True, "noise_sigma": float(_sigma)},
        objective=PatchDenoising(sigma=float(_sigma)),
        epochs=20,
        batch_size=64,
        dataset="train400",
    )
for _scale in NATURAL_SR_SCALES:
    RECIPES[f"t91-sr-x{_scale}"] = Recipe(
        name=f"t91-sr-x{_scale}",
        description=f"FSRCNN-style super-resolution x{_scale} for photographs: luminance by the network, colour "
        "bicubic; any size.",
        tasks=("super-resolve",),
        architecture="fsrcnn",
        architecture_config={"scale": _scale, "features": 56, "shrink": 12, "mapping_layers": 4},
        objective=PatchSuperResolution(scale=_scale),
        epochs=100,
        batch_size=64,
        dataset="t91",
    )


# The tasks `python -m models.train --images-dir` trains, and the card tasks each one gives.
IMAGE_FOLDER_TASKS: dict[str, tuple[str, ...]] = {
    "reconstruct": ("reconstruct", "embed"),
    "denoise": ("denoise", "reconstruct"),
    "super-resolve": ("super-resolve",),
    "vae": ("vae", "reconstruct", "embed"),
}
IMAGE_FOLDER_BATCH_SIZE = 64  # smaller than MNIST's 128: a folder of a few hundred images still gives several steps


def image_folder_recipe(
    task: str,
    name: str,
    channels: int,
    image_size: tuple[int, int],
    scale: int = 2,
    latent_size: int | None = None,
    epochs: int = 20,
    seed: int = 0,
) -> Recipe:
    """The recipe for one task on one's own images of `image_size` = (height, width) and `channels`.

    The same networks and objectives as the MNIST recipes, sized to the images: the autoencoder with
    the MNIST autoencoder's code regularisers (for embeddings), the blind denoiser (sigma up to 0.5),
    super-resolution from images downscaled by `scale`, and a VAE scored on grey levels.
    """
    height, width = image_size
    size_text = f"{width}x{height} {'RGB' if channels == 3 else 'grayscale'}"
    if task == "reconstruct":
        latent = latent_size or 32
        return Recipe(
            name=name,
            description=f"Autoencoder with a {latent}-d dense bottleneck for {size_text} images: reconstructions "
            "and compact embeddings.",
            tasks=IMAGE_FOLDER_TASKS[task],
            architecture="conv-autoencoder",
            architecture_config={
                "in_channels": channels,
                "widths": (32, 64, 64),
                "latent_size": latent,
                "image_size": image_size,
            },
            objective=Reconstruction(code_noise_sigma=0.2, code_penalty=1.0),
            epochs=epochs,
            batch_size=IMAGE_FOLDER_BATCH_SIZE,
            seed=seed,
        )
    if task == "denoise":
        return Recipe(
            name=name,
            description=f"Blind denoiser for {size_text} images: zero-mean Gaussian noise, any sigma up to 0.5, "
            "clipped.",
            tasks=IMAGE_FOLDER_TASKS[task],
            architecture="conv-autoencoder",
            architecture_config={
                "in_channels": channels,
                "widths": (32, 64, 128),
                "latent_size": None,
                "image_size": image_size,
            },
            objective=BlindDenoising(max_sigma=0.5),
            epochs=epochs,
            batch_size=IMAGE_FOLDER_BATCH_SIZE,
            seed=seed,
        )
    if task == "super-resolve":
        if height % scale or width % scale:
            raise ValueError(f"super-resolution x{scale} needs a size divisible by {scale}, got {width}x{height}")
        return Recipe(
            name=name,
            description=f"Super-resolution x{scale}: {width // scale}x{height // scale} (area-downscaled) -> "
            f"{size_text}.",
            tasks=IMAGE_FOLDER_TASKS[task],
            architecture="sr-autoencoder",
            architecture_config={"scale": scale, "in_channels": channels, "width": 32, "encoder_layers": 3},
            objective=SuperResolution(scale=scale),
            epochs=epochs,
            batch_size=IMAGE_FOLDER_BATCH_SIZE,
            seed=seed,
        )
    if task == "vae":
        latent = latent_size or 16
        return Recipe(
            name=name,
            description=f"Convolutional VAE with a {latent}-d latent space for {size_text} images.",
            tasks=IMAGE_FOLDER_TASKS[task],
            architecture="conv-vae",
            architecture_config={
                "latent_size": latent,
                "in_channels": channels,
                "widths": (32, 64),
                "hidden_size": 256,
                "image_size": image_size,
            },
            objective=GreyLevelElbo(kl_warmup_epochs=epochs / 4),
            epochs=epochs,
            batch_size=IMAGE_FOLDER_BATCH_SIZE,
            seed=seed,
        )
    raise ValueError(f"unknown task {task!r}; one of {sorted(IMAGE_FOLDER_TASKS)}")
