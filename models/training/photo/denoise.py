"""The photo-denoiser pipeline: FFDNet, one network for sigma 0..75, grayscale (Train400) or colour (CBSD432).

    python -m models.train photo-denoise-gray --data-dir ../shared/datasets --minutes 20 [--threads 1]
        [--state-dir training-state] [--device cpu|cuda] [--precision bfloat16|float32] [--publish if-better]

What each step sees: random `patch` x `patch` crops of the training images (a fresh position, flip and
rotation every time, so no patch is seen twice), each with its own noise level drawn uniformly from
[0, 75] (0..255 scale). Half the patches are then *uploads*: the noisy image clipped to [0, 255] and
rounded to 8 bits, as a served denoiser sees them; the other half keep the literature's float noise.
The network is told the true sigma; at serving time the caller gives it or the service estimates it.

Training accumulates over sessions. The resumable state lives in `<state-dir>/<name>/` (a tracked
folder, models.training.photo.state), saved every few minutes and when SIGTERM or SIGINT arrives; the
same command continues from there. Where no state exists:
- and a served checkpoint `<out>/<name>/` does, the run *continues* from its weights: a fresh Adam, a
  short linear warm-up, then a constant learning rate (`continue_learning_rate`), and the exponential
  moving average of the weights is what is validated and published; every invocation trains `--minutes`
  (or `--steps`) more;
- otherwise it starts from scratch, and `--minutes`/`--steps` is the whole budget of a cosine schedule.
Every few training minutes the validation PSNR (models.training.photo.validation: 12 BSD68 or CBSD68
crops at sigma 15/25/50) is logged against cumulative patch passes into run.json: the learning curve.

At the end of the budget the served checkpoint is written (`--publish always`), written only when the
validation PSNR beats the served weights' on the same images (`if-better`, the default), or left alone
(`never`: the background rotation, models.training.rotation). Paused time (SIGSTOP) does not count as
training time: a step longer than `MAX_STEP_S` counts as that long.
"""

from __future__ import annotations

import copy
import math
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from torch import nn

from models.architectures.ffdnet import SIGMA_RANGE, FFDNet
from models.checkpoint import CheckpointError, ModelCard, load_checkpoint, read_card, save_checkpoint
from models.data.natural_images import psnr_255, quantise, read_pictures
from models.training.photo.card import continued_training_record, finish_card, fresh_training_record, write_figures
from models.training.photo.recipes import PATCH_LOSSES, PHOTO_DENOISE_RECIPES, PatchSampler, PhotoDenoiseRecipe
from models.training.photo.state import RunState, load_state, save_state
from models.training.photo.validation import (
    VALIDATION_SIGMAS,
    ValidationSet,
    load_validation_set,
    validation_point,
    validation_psnr,
)

SAVE_EVERY_S = 300.0  # wall seconds between state saves
VALIDATE_EVERY_S = 300.0  # training seconds between validation points
MAX_STEP_S = 60.0  # a step that took longer was paused (SIGSTOP): it counts as this long
PUBLISH_POLICIES = ("if-better", "always", "never")


def corrupt(
    clean: torch.Tensor, sigmas: torch.Tensor, upload: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """clean + sigma/255 * N(0, 1) per patch; the patches flagged `upload` clipped and rounded to 8 bits."""
    noisy = clean + (sigmas / 255.0).view(-1, 1, 1, 1) * torch.randn(clean.shape, generator=generator)
    return torch.where(upload.view(-1, 1, 1, 1), quantise(noisy), noisy)


# PATCH_LOSSES["psnr"]: the MSE of a 60 dB patch, so that a near-perfect (sigma ~0) patch cannot dominate
PSNR_LOSS_FLOOR = 1e-6


def patch_loss(output: torch.Tensor, clean: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (the objective, the batch's plain MSE for the logs). "mse" weighs a patch by its squared error, so
    high-sigma patches dominate; "psnr" (minus the mean PSNR, up to a constant) weighs every patch's dB alike."""
    per_patch = (output.float() - clean).pow(2).flatten(1).mean(1)  # (B,)
    mse = per_patch.mean()
    if kind == "mse":
        return mse, mse
    if kind == "psnr":
        return 10.0 * torch.log10(per_patch + PSNR_LOSS_FLOOR).mean(), mse
    raise ValueError(f"unknown loss {kind!r}: use one of {', '.join(PATCH_LOSSES)}")


def cosine_rate(progress: float, peak: float, warmup: float = 0.01) -> float:
    """The learning rate at `progress` (0..1) of the run: a linear warm-up over its first `warmup`, then a
    cosine decay from `peak` to 1% of it."""
    if progress < warmup:
        return peak * max(progress / warmup, 0.01)
    decayed = min(1.0, (progress - warmup) / (1.0 - warmup))
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * decayed)))


class StopRequest:
    """Set by SIGTERM or SIGINT once `install_stop_handlers` ran: the loop saves its state and returns."""

    requested: bool = False


STOP = StopRequest()


def install_stop_handlers() -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        STOP.requested = True

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def continued_rate(step: int, recipe: PhotoDenoiseRecipe) -> float:
    """Continued training: a linear warm-up from 1% over `continue_warmup_steps`, then constant. Constant,
    because the run has no end: the served weights are taken wherever the validation curve stands highest."""
    warmup = recipe.continue_warmup_steps
    return recipe.continue_learning_rate * (max((step + 1) / warmup, 0.01) if step < warmup else 1.0)


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


@torch.no_grad()
def update_average(average: nn.Module, model: nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * model, on every float tensor (batch-norm statistics too)."""
    for kept, current in zip(average.state_dict().values(), model.state_dict().values(), strict=True):
        if kept.is_floating_point():
            kept.lerp_(current, 1.0 - decay)
        else:
            kept.copy_(current)


def note_phase(state: RunState, recipe: PhotoDenoiseRecipe) -> None:
    """Record the objective and constant rate this invocation continues with, if they differ from the last
    phase's; a state from before phases were kept ran the registered recipe's from its start."""
    if not state.continued:
        return
    if not state.phases:
        registered = PHOTO_DENOISE_RECIPES.get(recipe.name, recipe)
        state.phases.append(phase(state.origin_patch_passes, registered))
    last = state.phases[-1]
    if (last["loss"], last["learning_rate"]) != (recipe.loss, recipe.continue_learning_rate):
        state.phases.append(phase(state.patch_passes, recipe))


def phase(from_patch_passes: int, recipe: PhotoDenoiseRecipe) -> dict[str, Any]:
    return {"from_patch_passes": from_patch_passes, "loss": recipe.loss, "learning_rate": recipe.continue_learning_rate}


def start_state(
    recipe: PhotoDenoiseRecipe,
    model: FFDNet,
    average: FFDNet,
    served_dir: Path,
    minutes: float | None,
    steps: int | None,
) -> RunState:
    """No saved state: continue from the served checkpoint's weights if there is one, else start afresh."""
    state = RunState(batch_size=recipe.batch_size)
    if not (served_dir / "model.safetensors").is_file():
        state.total_steps, state.budget_s = steps or 0, (minutes or 0.0) * 60.0
        return state
    served = load_checkpoint(served_dir)
    if served.model.config_dict() != model.config_dict():
        raise CheckpointError(
            f"{served_dir}: the served {served.model.config_dict()} differs from the recipe's {model.config_dict()}"
        )
    model.load_state_dict(served.model.state_dict())
    average.load_state_dict(served.model.state_dict())
    state.continued = True
    state.origin_patch_passes = int(served.card.training.get("patch_passes", 0))
    state.origin_seconds = float(served.card.training.get("duration_s", 0.0))
    return state


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
    *,
    state_root: Path,
    device: str = "cpu",
    publish: str = "if-better",
    validate_every_s: float = VALIDATE_EVERY_S,
) -> ModelCard | None:
    """Train (or resume) for the budget; -> the card written into `<out>/<name>/`, or None when the served
    checkpoint was left as it was (a stop request, `publish` never, or no validation gain)."""
    torch.set_num_threads(threads)
    target = torch.device(device)
    images = read_pictures(Path(data_dir) / recipe.folder, recipe.config.channels)[:limit_images]
    held = min(recipe.held_out_images, max(1, len(images) // 5))
    train_images, held_out = images[:-held], images[-held:]
    validation_set = load_validation_set(Path(data_dir), recipe.validation_folder, recipe.config.channels)

    torch.manual_seed(recipe.seed)
    model = FFDNet(recipe.config).to(target, memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimiser = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
    generators = {
        "data": torch.Generator().manual_seed(recipe.seed + 1),
        "noise": torch.Generator().manual_seed(recipe.seed + 2),
    }
    directory = Path(out) / recipe.name
    state_dir = Path(state_root) / recipe.name
    average = copy.deepcopy(model)  # continued training: the weights' moving average, validated and published
    state = load_state(state_dir, model, optimiser, generators, average) or start_state(
        recipe, model, average, directory, minutes, steps
    )
    kept = average if state.continued else model  # what is validated and published
    note_phase(state, recipe)
    state.batch_size = recipe.batch_size
    sampler = PatchSampler(train_images, recipe.patch, generators["data"])
    autocast = precision == "bfloat16"

    def train_step(rate: float) -> float:
        model.train()
        clean = sampler.draw(recipe.batch_size)
        sigmas = torch.rand(recipe.batch_size, generator=generators["noise"]) * SIGMA_RANGE[1]
        upload = torch.rand(recipe.batch_size, generator=generators["noise"]) < recipe.upload_fraction
        noisy = corrupt(clean, sigmas, upload, generators["noise"])
        noisy = noisy.to(target).contiguous(memory_format=torch.channels_last)
        for group in optimiser.param_groups:
            group["lr"] = rate
        with torch.autocast(target.type, dtype=torch.bfloat16, enabled=autocast):
            output = model(noisy, sigmas.to(target))
        loss, mse = patch_loss(output, clean.to(target), recipe.loss)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return float(mse.detach())  # the curve logs plain MSE whatever the objective, so runs compare

    session = {"steps": 0, "seconds": 0.0}

    def budget_left() -> bool:
        if state.continued:  # every invocation trains its own budget more
            return session["steps"] < steps if steps else session["seconds"] < (minutes or 0.0) * 60.0
        return state.step < state.total_steps if state.total_steps else state.seconds < state.budget_s

    def rate() -> float:
        if state.continued:
            return continued_rate(state.step, recipe)
        progress = state.step / state.total_steps if state.total_steps else state.seconds / state.budget_s
        return cosine_rate(progress, recipe.learning_rate)

    def validate() -> None:
        figures = validation_psnr(kept, validation_set, target)
        state.validation.append(validation_point(state.patch_passes, state.minutes, figures))
        print(f"{recipe.name}: validation at {state.patch_passes:,} patch passes: {figures}", file=stream, flush=True)

    if not state.validation:
        validate()  # where the curve starts: the served weights, or the untrained network
    last_save = last_point = time.perf_counter()
    last_validation = state.seconds
    curve_total, curve_count = 0.0, 0
    while budget_left() and not STOP.requested:
        began = time.perf_counter()
        curve_total += train_step(rate())
        if state.continued:
            update_average(average, model, recipe.average_decay)
        took = time.perf_counter() - began
        counted = min(took, MAX_STEP_S)
        curve_count += 1
        state.step += 1
        state.seconds += counted
        state.paused_s += took - counted
        session["steps"] += 1
        session["seconds"] += counted
        state.threads = threads
        if time.perf_counter() - last_point > 30 or not budget_left():
            last_point = time.perf_counter()
            state.curve.append([state.patch_passes, curve_total / curve_count])
            print(
                f"{recipe.name}: step {state.step} lr {rate():.2g} loss {curve_total / curve_count:.6f} "
                f"({state.patch_passes:,} patch passes, {state.minutes:.1f} min cumulative)",
                file=stream,
                flush=True,
            )
            curve_total, curve_count = 0.0, 0
        if state.seconds - last_validation >= validate_every_s:
            validate()
            last_validation = state.seconds
        if time.perf_counter() - last_save > SAVE_EVERY_S:
            save_state(state_dir, model, optimiser, state, generators, average if state.continued else None)
            last_save = time.perf_counter()
    if STOP.requested or budget_left():
        save_state(state_dir, model, optimiser, state, generators, average if state.continued else None)
        print(f"{recipe.name}: stopped; state saved in {state_dir}", file=stream, flush=True)
        return None
    if state.validation[-1]["patch_passes"] != state.patch_passes:
        validate()
    save_state(state_dir, model, optimiser, state, generators, average if state.continued else None)
    model = kept.to("cpu", memory_format=torch.contiguous_format).eval()

    def make_card(served: dict[str, Any] | None) -> ModelCard:
        """The card of these weights, carrying the served card's history forward when continuing it."""
        if state.continued and served is not None:
            training = continued_training_record(served, recipe, state, command, str(state_dir))
        else:
            training = fresh_training_record(recipe, state, command, len(train_images), len(held_out))
        scores = {f"sigma_{int(s)}": held_out_psnr(model, held_out, s) for s in VALIDATION_SIGMAS}
        companion = next(name for name in PHOTO_DENOISE_RECIPES if name != recipe.name)  # the other colour mode
        trained_with = state.threads or threads  # a publish-only invocation (--steps 0) trained nothing itself
        return finish_card(recipe, model, training, state, scores, precision, device, trained_with, companion)

    card = publish_checkpoint(model, state, directory, validation_set, publish, stream, make_card)
    if card is not None:
        write_figures(recipe, model, held_out, state, directory)
    return card


def publish_checkpoint(
    model: FFDNet,
    state: RunState,
    directory: Path,
    validation_set: ValidationSet,
    policy: str,
    stream: Any,
    make_card: Callable[[dict[str, Any] | None], ModelCard],
) -> ModelCard | None:
    """Write the served checkpoint as `policy` says: always, never, or if-better (the validation mean PSNR
    of these weights above the served weights' on the same images)."""
    if policy not in PUBLISH_POLICIES:
        raise ValueError(f"publish must be one of {PUBLISH_POLICIES}, got {policy!r}")
    if policy == "never":
        return None
    served_training: dict[str, Any] | None = None
    if (directory / "config.json").is_file():
        served_training = read_card(directory).training
        if policy == "if-better":
            served = validation_psnr(load_checkpoint(directory).model, validation_set)
            current = state.validation[-1]
            if current["mean"] <= served["mean"]:
                print(
                    f"{directory.name}: served checkpoint kept (validation mean {served['mean']} dB "
                    f">= {current['mean']})",
                    file=stream,
                    flush=True,
                )
                return None
    return save_checkpoint(model, make_card(served_training), directory)
