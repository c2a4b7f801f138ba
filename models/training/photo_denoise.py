"""The photo-denoiser pipeline: FFDNet, one network for sigma 0..75, grayscale (Train400) or colour (CBSD432).

    python -m models.train photo-denoise-gray --data-dir ../shared/datasets --minutes 100 [--threads 1]
    python -m models.train photo-denoise-color --data-dir ../shared/datasets --minutes 100 [--precision float32]

What each step sees: random `patch` x `patch` crops of the training images (a fresh position, flip and
rotation every time, so no patch is seen twice), each with its own noise level drawn uniformly from
[0, 75] (0..255 scale). Half the patches are then *uploads*: the noisy image clipped to [0, 255] and
rounded to 8 bits, as a served denoiser sees them; the other half keep the literature's float noise.
The network is told the true sigma; at serving time the caller gives it or the service estimates it.

The run is budgeted in steps, and `--minutes` turns a time budget into steps from the throughput of
the first steps, so the cosine learning-rate schedule reaches its end when the time does. The run is
resumable: every few minutes the weights, the optimiser and the random generators are written to
`<out>/<name>/.training-state/`; the same command continues from there after an interruption. The last
images of the folder in name order are held out and scored (PSNR at sigma 15/25/50, upload protocol)
when the run ends; the card records patch passes, minutes, device and precision.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from models.architectures.ffdnet import SIGMA_RANGE, FFDNet, FFDNetConfig
from models.checkpoint import FINISHED_AT, InputSpec, ModelCard, save_checkpoint, utc_now_iso
from models.data.natural_images import psnr_255, quantise, read_pictures
from models.runtime.machine import cpu_description
from models.training.plots import image_grid, loss_curve

BSD_LICENCE = (
    "BSD-derived images offered by UC Berkeley for non-commercial research and educational purposes; used here to "
    "train the weights, not redistributed (no image is in this repository)"
)
STATE_DIR = ".training-state"
SAVE_EVERY_S = 300.0
VALIDATION_SIGMAS = (15.0, 25.0, 50.0)


@dataclass(frozen=True)
class PhotoDenoiseRecipe:
    name: str  # the checkpoint folder
    description: str
    folder: str  # training images, under --data-dir
    dataset_title: str
    config: FFDNetConfig
    patch: int = 50  # side of the training crops (even)
    batch_size: int = 32
    learning_rate: float = 1e-3  # Adam, peak; cosine decay to 1% of it
    upload_fraction: float = 0.5  # patches clipped to [0, 255] and rounded to 8 bits
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


def corrupt(
    clean: torch.Tensor, sigmas: torch.Tensor, upload: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """clean + sigma/255 * N(0, 1) per patch; the patches flagged `upload` clipped and rounded to 8 bits."""
    noisy = clean + (sigmas / 255.0).view(-1, 1, 1, 1) * torch.randn(clean.shape, generator=generator)
    return torch.where(upload.view(-1, 1, 1, 1), quantise(noisy), noisy)


def cosine_rate(progress: float, peak: float, warmup: float = 0.01) -> float:
    """The learning rate at `progress` (0..1) of the run: a linear warm-up over its first `warmup`, then a
    cosine decay from `peak` to 1% of it."""
    if progress < warmup:
        return peak * max(progress / warmup, 0.01)
    decayed = min(1.0, (progress - warmup) / (1.0 - warmup))
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * decayed)))


@dataclass
class RunState:
    step: int = 0
    total_steps: int = 0  # 0: the run is budgeted in time instead (budget_s)
    budget_s: float = 0.0
    seconds: float = 0.0  # training time summed over every (resumed) part of the run
    curve: list[tuple[float, float]] | None = None  # (patch passes in thousands, mean loss since the last point)


def save_state(
    directory: Path,
    model: FFDNet,
    optimiser: torch.optim.Optimizer,
    state: RunState,
    generators: dict[str, torch.Generator],
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    optimiser_state = optimiser.state_dict()
    for index, values in optimiser_state["state"].items():
        for key, value in values.items():
            tensors[f"optimiser.{index}.{key}"] = torch.as_tensor(value).detach().contiguous()
    for name, generator in generators.items():
        tensors[f"generator.{name}"] = generator.get_state()
    safetensors.torch.save_file(tensors, str(directory / "state.safetensors.tmp"))
    (directory / "state.safetensors.tmp").replace(directory / "state.safetensors")
    (directory / "run.json").write_text(json.dumps(state.__dict__))


def load_state(
    directory: Path, model: FFDNet, optimiser: torch.optim.Optimizer, generators: dict[str, torch.Generator]
) -> RunState | None:
    if not (directory / "run.json").is_file():
        return None
    tensors = safetensors.torch.load_file(str(directory / "state.safetensors"))
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    optimiser_state = optimiser.state_dict()
    for key, value in tensors.items():
        if key.startswith("optimiser."):
            _, index, name = key.split(".", 2)
            optimiser_state["state"].setdefault(int(index), {})[name] = value
    optimiser.load_state_dict(optimiser_state)
    for name, generator in generators.items():
        generator.set_state(tensors[f"generator.{name}"])
    values = json.loads((directory / "run.json").read_text())
    return RunState(**values)


@torch.no_grad()
def held_out_psnr(model: FFDNet, images: list[np.ndarray], sigma: float, seed: int = 0) -> dict[str, float]:
    """Mean PSNR on the held-out images at one sigma: noisy input PSNR and the model's, upload protocol."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    noisy_total, model_total = 0.0, 0.0
    for pixels in images:
        clean = (
            torch.from_numpy(np.array(pixels if pixels.ndim == 3 else pixels[..., None])).permute(2, 0, 1)[None] / 255.0
        )
        noisy = quantise(clean + sigma / 255.0 * torch.randn(clean.shape, generator=generator))
        output = quantise(model.denoise_at(noisy, sigma))
        noisy_total += psnr_255(noisy, clean)
        model_total += psnr_255(output, clean)
    return {"noisy_psnr_db": round(noisy_total / len(images), 3), "psnr_db": round(model_total / len(images), 3)}


def run(
    recipe: PhotoDenoiseRecipe,
    data_dir: Path,
    out: Path,
    minutes: float | None,
    steps: int | None,
    precision: str,
    threads: int,
    command: str,
    limit_images: int | None = None,
    stream: Any = sys.stderr,
) -> ModelCard:
    torch.set_num_threads(threads)
    images = read_pictures(Path(data_dir) / recipe.folder, recipe.config.channels)[:limit_images]
    held = min(recipe.held_out_images, max(1, len(images) // 5))
    train_images, held_out = images[:-held], images[-held:]

    torch.manual_seed(recipe.seed)
    model = FFDNet(recipe.config).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimiser = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
    generators = {
        "data": torch.Generator().manual_seed(recipe.seed + 1),
        "noise": torch.Generator().manual_seed(recipe.seed + 2),
    }
    directory = Path(out) / recipe.name
    state_dir = directory / STATE_DIR
    state = load_state(state_dir, model, optimiser, generators) or RunState(curve=[])
    assert state.curve is not None
    sampler = PatchSampler(train_images, recipe.patch, generators["data"])
    autocast = precision == "bfloat16"

    def train_step(rate: float) -> float:
        model.train()
        clean = sampler.draw(recipe.batch_size)
        sigmas = torch.rand(recipe.batch_size, generator=generators["noise"]) * SIGMA_RANGE[1]
        upload = torch.rand(recipe.batch_size, generator=generators["noise"]) < recipe.upload_fraction
        noisy = corrupt(clean, sigmas, upload, generators["noise"]).contiguous(memory_format=torch.channels_last)
        for group in optimiser.param_groups:
            group["lr"] = rate
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            output = model(noisy, sigmas)
        loss = (output.float() - clean).pow(2).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return float(loss.detach())

    if state.step == 0:
        state.total_steps = steps or 0
        state.budget_s = (minutes or 0.0) * 60.0

    def progress() -> float:
        """How far the schedule has come, 0..1: by steps, or by training time (a shared, busy machine
        then trains fewer steps, but the schedule still ends when the time does)."""
        if state.total_steps:
            return state.step / state.total_steps
        return (base_seconds + time.perf_counter() - started) / state.budget_s

    started, last_save, curve_total, curve_count = time.perf_counter(), time.perf_counter(), 0.0, 0
    base_seconds = state.seconds
    last_point = time.perf_counter()
    while progress() < 1.0:
        curve_total += train_step(cosine_rate(progress(), recipe.learning_rate))
        curve_count += 1
        state.step += 1
        if time.perf_counter() - last_point > 30 or progress() >= 1.0:
            last_point = time.perf_counter()
            state.curve.append((state.step * recipe.batch_size / 1000, curve_total / curve_count))
            print(
                f"{recipe.name}: step {state.step} ({progress():.1%}) loss {curve_total / curve_count:.6f} "
                f"({(time.perf_counter() - started + base_seconds) / 60:.1f} min)",
                file=stream,
                flush=True,
            )
            curve_total, curve_count = 0.0, 0
        if time.perf_counter() - last_save > SAVE_EVERY_S:
            state.seconds = base_seconds + time.perf_counter() - started
            save_state(state_dir, model, optimiser, state, generators)
            last_save = time.perf_counter()
    state.seconds = base_seconds + time.perf_counter() - started
    save_state(state_dir, model, optimiser, state, generators)

    model = model.to(memory_format=torch.contiguous_format).eval()
    validation = {f"sigma_{int(s)}": held_out_psnr(model, held_out, s) for s in VALIDATION_SIGMAS}
    patch_passes = state.step * recipe.batch_size
    training: dict[str, Any] = {
        "recipe": recipe.name,
        "command": command,
        "dataset": recipe.dataset_title,
        "licence": BSD_LICENCE,
        "train_images": len(train_images),
        "held_out_images": f"the last {len(held_out)} images in name order (scored below, never trained on)",
        "patches": f"random {recipe.patch}x{recipe.patch} crops, one of the 8 flips/rotations each, drawn afresh "
        "every step",
        "noise": f"white Gaussian, sigma uniform in [0, {SIGMA_RANGE[1]:g}] per patch (0..255 scale); "
        f"{recipe.upload_fraction:.0%} of patches clipped to [0, 255] and rounded to 8 bits (uploads), the rest float",
        "loss": "mean squared error per pixel (pixels in [0, 1])",
        "steps": state.step,
        "batch_size": recipe.batch_size,
        "patch_passes": patch_passes,
        "optimiser": "Adam",
        "learning_rate": recipe.learning_rate,
        "learning_rate_schedule": "1% linear warm-up, cosine decay to 1% of the peak, over "
        + (f"{state.total_steps} steps" if state.total_steps else f"{state.budget_s / 60:g} minutes of training time"),
        "precision": "bfloat16 autocast (float32 weights)" if autocast else "float32",
        "memory_format": "channels_last",
        "seed": recipe.seed,
        "device": "cpu",
        "torch_version": torch.__version__,
        "torch_threads": threads,
        "cpu": cpu_description(),
        "duration_s": round(state.seconds, 1),
        FINISHED_AT: utc_now_iso(),  # `created` of /v1/models
        "minutes": round(state.seconds / 60, 1),
        "patches_per_second": round(patch_passes / max(state.seconds, 1e-9), 1),
        "held_out_validation_upload_protocol": validation,
    }
    card = ModelCard(
        name=recipe.name,
        tasks=["denoise"],
        architecture=FFDNet.name,
        architecture_config=model.config_dict(),
        input=InputSpec(channels=recipe.config.channels, height=None, width=None, domain="natural"),
        normalization="pixels as float32 in [0, 1], any size (tiled inference); the noise level sigma (0..255 "
        "scale) is an input: given by the caller or estimated from the image",
        description=recipe.description,
        training=training,
    )
    card = save_checkpoint(model, card, directory)
    write_figures(recipe, model, held_out, state, directory)
    return card


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
    assert state.curve is not None
    loss_curve(
        [("train", [(x, y) for x, y in state.curve])],
        directory / "loss.png",
        title=f"{recipe.name}: mean squared error (x: thousands of patch passes)",
        log_scale=True,
    )
