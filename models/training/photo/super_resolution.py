"""Super-resolution past FSRCNN: the residual network of models.architectures.residual_sr, x2/x3/x4, resumable.

    python -m models.train photo-sr-x2 --data-dir ../shared/datasets --minutes 20 [--threads 1]
        [--state-dir training-state] [--device cpu|cuda] [--publish if-better|always|never]

What each step sees: `batch_size` random `patch` x `patch` crops of the luminance (BT.601 Y) of T91 and
Train400 (a fresh position and one of the 8 flips/rotations each), downscaled by Pillow's bicubic (the
evaluation's degradation, models.data.natural_images) as the input, the crop itself as the target; loss L1
(EDSR's choice: sharper than the squared error at the same PSNR). Adam at a constant rate after a short
warm-up: the training has no end, it accumulates over sessions; the exponential moving average of the
weights is what is validated (Set5, Y, `scale` pixels shaved at each border, the SR tables' protocol) and
published, so any stop gives an annealed-like snapshot. The state lives in `<state-dir>/<name>/` (as the
photo denoisers', models.training.photo.state), saved every few minutes and on SIGTERM/SIGINT; every
invocation trains `--minutes` (or `--steps`) more. Each validation point goes into run.json's curve.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from models.architectures.residual_sr import ResidualSR, ResidualSRConfig
from models.checkpoint import FINISHED_AT, InputSpec, ModelCard, load_checkpoint, save_checkpoint, utc_now_iso
from models.data.natural_images import bicubic_downscale, bicubic_upscale, luminance, modcrop, psnr_y, read_pictures
from models.runtime.machine import cpu_description
from models.training.photo.denoise import MAX_STEP_S, SAVE_EVERY_S, STOP, PatchSampler, update_average
from models.training.photo.state import RunState, load_state, save_state
from models.training.photo.validation import validation_point

VALIDATE_EVERY_S = 300.0


@dataclass(frozen=True)
class PhotoSRRecipe:
    name: str
    config: ResidualSRConfig
    folders: tuple[str, ...] = ("T91", "Train400")
    validation_folder: str = "Set5"
    patch: int = 96  # high-resolution side of the crops: a multiple of 2, 3 and 4
    batch_size: int = 16
    learning_rate: float = 2e-4
    warmup_steps: int = 200
    average_decay: float = 0.999
    seed: int = 0

    @property
    def description(self) -> str:
        return (
            f"Residual super-resolution x{self.config.scale} for photographs ({self.config.blocks} residual blocks "
            f"of {self.config.features} channels at low resolution, pixel shuffle): luminance by the network, "
            "colour bicubic; any size."
        )


# Serving cost per megapixel of output (multiply-adds): x2 ~30 G, x3 ~17 G, x4 ~22 G (FSRCNN x2: ~2.5 G).
PHOTO_SR_RECIPES: dict[str, PhotoSRRecipe] = {
    recipe.name: recipe
    for recipe in (
        PhotoSRRecipe("photo-sr-x2", ResidualSRConfig(scale=2, features=32, blocks=6)),
        PhotoSRRecipe("photo-sr-x3", ResidualSRConfig(scale=3, features=32, blocks=8)),
        PhotoSRRecipe("photo-sr-x4", ResidualSRConfig(scale=4, features=48, blocks=8)),
    )
}


def sr_validation(model: ResidualSR, images: list[np.ndarray], device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean Y PSNR (dB, `scale` pixels shaved) of the model and of bicubic on the validation images."""
    model.eval()
    scale, totals = model.scale, {"model": 0.0, "bicubic": 0.0}
    with torch.no_grad():
        for pixels in images:
            high = luminance(modcrop(pixels, scale))
            low = bicubic_downscale(high, scale)
            totals["model"] += psnr_y(model(low.to(device)).float().cpu(), high, scale)
            totals["bicubic"] += psnr_y(bicubic_upscale(low, scale), high, scale)
    return {key: round(float(value / len(images)), 3) for key, value in totals.items()}


def luminance_uint8(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 BT.601 Y, the channel the evaluation scores (a grey picture: itself)."""
    if np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2]):
        return np.ascontiguousarray(pixels[..., 0])
    return (luminance(pixels)[0, 0] * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()


def run(
    recipe: PhotoSRRecipe,
    data_dir: Path,
    out: Path,
    minutes: float | None,
    steps: int | None,
    threads: int,
    command: str,
    stream: Any = sys.stderr,
    *,
    state_root: Path,
    device: str = "cpu",
    publish: str = "if-better",
    limit_images: int | None = None,
) -> ModelCard | None:
    """Train (or resume) for `minutes` or `steps` more; -> the card written, or None when nothing was published."""
    torch.set_num_threads(threads)
    target = torch.device(device)
    scale = recipe.config.scale
    pictures = [
        luminance_uint8(pixels)
        for folder in recipe.folders
        for pixels in read_pictures(Path(data_dir) / folder, 3)[:limit_images]
    ]
    validation_images = [np.asarray(p) for p in read_pictures(Path(data_dir) / recipe.validation_folder, 3)]
    torch.manual_seed(recipe.seed)
    model = ResidualSR(recipe.config).to(target)
    average = copy.deepcopy(model)
    optimiser = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
    generators = {"data": torch.Generator().manual_seed(recipe.seed + 1)}
    state_dir, directory = Path(state_root) / recipe.name, Path(out) / recipe.name
    state = load_state(state_dir, model, optimiser, generators, average)
    if state is None:
        state = RunState(batch_size=recipe.batch_size, continued=True)
        if (directory / "model.safetensors").is_file():  # continue the served weights
            served = load_checkpoint(directory, target)
            model.load_state_dict(served.model.state_dict())
            average.load_state_dict(served.model.state_dict())
            state.origin_patch_passes = int(served.card.training.get("patch_passes", 0))
            state.origin_seconds = float(served.card.training.get("duration_s", 0.0))
    sampler = PatchSampler([p for p in pictures if min(p.shape[:2]) >= recipe.patch], recipe.patch, generators["data"])

    def validate() -> None:
        figures = sr_validation(average, validation_images, target)
        state.validation.append(validation_point(state.patch_passes, state.minutes, figures))
        print(f"{recipe.name}: validation at {state.patch_passes:,} patch passes: {figures}", file=stream, flush=True)

    if not state.validation:
        validate()
    session_steps, session_seconds, last_save, last_validation = 0, 0.0, time.perf_counter(), state.seconds

    def budget_left() -> bool:
        return session_steps < steps if steps else session_seconds < (minutes or 0.0) * 60.0

    while budget_left() and not STOP.requested:
        began = time.perf_counter()
        model.train()
        high = sampler.draw(recipe.batch_size)  # (B, 1, patch, patch) in [0, 1]
        low = bicubic_downscale(high, scale)
        rate = recipe.learning_rate * min(1.0, (state.step + 1) / recipe.warmup_steps)
        for group in optimiser.param_groups:
            group["lr"] = rate
        loss = F.l1_loss(model(low.to(target)), high.to(target))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        update_average(average, model, recipe.average_decay)
        counted = min(time.perf_counter() - began, MAX_STEP_S)
        state.step, session_steps, state.threads = state.step + 1, session_steps + 1, threads
        state.seconds, session_seconds = state.seconds + counted, session_seconds + counted
        if state.step % 50 == 0:
            state.curve.append([state.patch_passes, float(loss.detach())])
        if state.seconds - last_validation >= VALIDATE_EVERY_S:
            validate()
            last_validation = state.seconds
        if time.perf_counter() - last_save > SAVE_EVERY_S:
            save_state(state_dir, model, optimiser, state, generators, average)
            last_save = time.perf_counter()
    if not STOP.requested and state.validation[-1]["patch_passes"] != state.patch_passes:
        validate()
    save_state(state_dir, model, optimiser, state, generators, average)
    if STOP.requested or publish == "never":
        return None
    final = average.to("cpu").eval()
    if publish == "if-better" and (directory / "config.json").is_file():
        served_psnr = sr_validation(load_checkpoint(directory).model, validation_images)["model"]  # type: ignore[arg-type]
        if state.validation[-1]["model"] <= served_psnr:
            print(f"{recipe.name}: served checkpoint kept ({served_psnr} dB on Set5)", file=stream, flush=True)
            return None
    card = ModelCard(
        name=recipe.name,
        tasks=["super-resolve"],
        architecture=ResidualSR.name,
        architecture_config=final.config_dict(),
        input=InputSpec(channels=3, height=None, width=None, domain="natural"),
        normalization="pixels as float32 in [0, 1], RGB, any size (tiled inference); the network upscales the "
        "luminance (Y of BT.601 YCbCr); Cb and Cr are upscaled bicubically; RGB out",
        scale=scale,
        description=recipe.description,
        training={
            "recipe": recipe.name,
            "command": command,
            "dataset": " + ".join(recipe.folders) + " luminance (T91: Yang et al. 2010; Train400: BSD)",
            "patches": f"random {recipe.patch}x{recipe.patch} crops, one of the 8 flips/rotations each, Pillow "
            f"bicubic x{scale} downscaling as the input",
            "loss": "mean absolute error (L1) per pixel",
            "batch_size": recipe.batch_size,
            "steps": state.step,
            "patch_passes": state.patch_passes,
            "optimiser": "Adam",
            "learning_rate_schedule": f"linear warm-up over {recipe.warmup_steps} steps, then constant "
            f"{recipe.learning_rate:g}; published weights: the moving average (decay {recipe.average_decay})",
            "validation_curve": state.validation,
            "device": device,
            "torch_version": torch.__version__,
            "torch_threads": state.threads or threads,  # of the training, not of a publish-only invocation
            "cpu": cpu_description(),
            "duration_s": round(state.origin_seconds + state.seconds, 1),
            "minutes": round(state.minutes, 1),
            FINISHED_AT: utc_now_iso(),
        },
    )
    return save_checkpoint(final, card, directory)
