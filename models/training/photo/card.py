"""The card and figures a photo-denoiser run writes beside its weights (models.training.photo.denoise)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.architectures.ffdnet import SIGMA_RANGE, FFDNet
from models.checkpoint import FINISHED_AT, InputSpec, ModelCard, utc_now_iso
from models.data.natural_images import quantise
from models.runtime.machine import cpu_description
from models.training.photo.recipes import PATCH_LOSSES, PatchSampler, PhotoDenoiseRecipe
from models.training.photo.state import RunState
from models.training.plots import image_grid, loss_curve

BSD_LICENCE = (
    "BSD-derived images offered by UC Berkeley for non-commercial research and educational purposes; used here to "
    "train the weights, not redistributed (no image is in this repository)"
)


def fresh_training_record(
    recipe: PhotoDenoiseRecipe, state: RunState, command: str, train_images: int, held_out: int
) -> dict[str, Any]:
    """What a run from scratch (cosine schedule over its budget) writes into the card's `training`."""
    return {
        "recipe": recipe.name,
        "command": command,
        "dataset": recipe.dataset_title,
        "licence": BSD_LICENCE,
        "train_images": train_images,
        "held_out_images": f"the last {held_out} images in name order (scored below, never trained on)",
        "patches": f"random {recipe.patch}x{recipe.patch} crops, one of the 8 flips/rotations each, drawn afresh "
        "every step",
        "noise": f"white Gaussian, sigma uniform in [0, {SIGMA_RANGE[1]:g}] per patch (0..255 scale); "
        f"{recipe.upload_fraction:.0%} of patches clipped to [0, 255] and rounded to 8 bits (uploads), the rest float",
        "loss": PATCH_LOSSES[recipe.loss],
        "steps": state.step,
        "batch_size": recipe.batch_size,
        "optimiser": "Adam",
        "learning_rate": recipe.learning_rate,
        "learning_rate_schedule": "1% linear warm-up, cosine decay to 1% of the peak, over "
        + (f"{state.total_steps} steps" if state.total_steps else f"{state.budget_s / 60:g} minutes of training time"),
        "memory_format": "channels_last",
        "seed": recipe.seed,
    }


def continued_training_record(
    served: dict[str, Any], recipe: PhotoDenoiseRecipe, state: RunState, command: str, state_folder: str
) -> dict[str, Any]:
    """The served card's `training`, carried forward: cumulative patch passes and minutes, and what the
    continued training (this state folder's lineage) added."""
    origin_steps = int(served.get("continued_training", {}).get("origin_steps", served.get("steps", 0)))
    return {
        **served,
        "steps": origin_steps + state.step,
        "continued_training": {
            "command": command,
            "state_folder": state_folder,
            "origin": f"the served checkpoint trained on {state.origin_patch_passes:,} patch passes in "
            f"{state.origin_seconds / 60:.1f} minutes",
            "origin_steps": origin_steps,
            "steps": state.step,
            "patch_passes": state.step * recipe.batch_size,
            "minutes": round(state.seconds / 60, 1),
            "optimiser": "Adam, fresh at the start of the continuation",
            "learning_rate_schedule": f"linear warm-up from 1% over {recipe.continue_warmup_steps} steps, then "
            + "; ".join(
                f"from {phase['from_patch_passes']:,} patch passes constant {phase['learning_rate']:g}, "
                f"loss {PATCH_LOSSES[phase['loss']]}"
                for phase in state.phases
            ),
            "phases": state.phases,
            "validation_curve": state.validation,
        },
    }


def finish_card(
    recipe: PhotoDenoiseRecipe,
    model: FFDNet,
    training: dict[str, Any],
    state: RunState,
    validation: dict[str, Any],
    precision: str,
    device: str,
    threads: int,
    companion: str | None = None,
) -> ModelCard:
    """The card: the record above plus what every run states (cumulative figures, machine, validation)."""
    training = {
        **training,
        "patch_passes": state.patch_passes,
        "precision": "bfloat16 autocast (float32 weights)" if precision == "bfloat16" else "float32",
        "device": device,
        "torch_version": torch.__version__,
        "torch_threads": threads,
        "cpu": cpu_description(),
        "duration_s": round(state.origin_seconds + state.seconds, 1),
        FINISHED_AT: utc_now_iso(),  # `created` of /v1/models
        "minutes": round(state.minutes, 1),
        "patches_per_second": round(state.step * recipe.batch_size / max(state.seconds, 1e-9), 1),
        "held_out_validation_upload_protocol": validation,
    }
    return ModelCard(
        name=recipe.name,
        tasks=["denoise"],
        architecture=FFDNet.name,
        architecture_config=model.config_dict(),
        input=InputSpec(channels=recipe.config.channels, height=None, width=None, domain="natural"),
        normalization="pixels as float32 in [0, 1], any size (tiled inference); the noise level sigma (0..255 "
        "scale) is an input: given by the caller or estimated from the image",
        description=recipe.description,
        training=training,
        companion=companion,  # the model of the other colour mode (grayscale pictures to the gray one)
    )


def write_figures(
    recipe: PhotoDenoiseRecipe, model: FFDNet, held_out: list[np.ndarray], state: RunState, directory: Path
) -> None:
    """samples.png (noisy at sigma 25 / denoised / clean crops of held-out images) and loss.png."""
    generator = torch.Generator().manual_seed(4)
    side = min(96, *(min(image.shape[:2]) for image in held_out))
    crops = [PatchSampler(held_out, side, generator).draw(1)[0] for _ in range(8)]
    clean = torch.stack(crops)
    noisy = quantise(clean + 25 / 255 * torch.randn(clean.shape, generator=generator))
    with torch.no_grad():
        denoised = model.denoise_at(noisy, 25.0)
    image_grid([("noisy 25", noisy), ("denoised", denoised), ("clean", clean)], directory / "samples.png")
    loss_curve(
        [("train", [(x / 1000, y) for x, y in state.curve])],
        directory / "loss.png",
        title=f"{recipe.name}: mean squared error (x: thousands of patch passes, cumulative)",
        log_scale=True,
    )
