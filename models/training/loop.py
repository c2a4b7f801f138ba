"""The generic training loop and what every training pipeline shares.

`train(recipe, split, options)` trains any recipe of `models.training.recipes` on an `ImageSplit` (images to train
on and a hold-out) and keeps the weights of the epoch with the best validation loss. The run is
reproducible: the seed fixes the initial weights (torch.manual_seed), the data order and every corruption
(a seeded generator). `training_run` is what every model card says of how its weights were trained.
The pipelines (`models.training.mnist`, `.natural`, `.own_images`) build on this module, never the reverse.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from models.architectures import Architecture, build_model
from models.checkpoint import FINISHED_AT, CheckpointError, load_checkpoint, utc_now_iso
from models.runtime.machine import cpu_description
from models.training.progress import Progress
from models.training.recipes import Recipe


@dataclass
class ImageSplit:
    """What the training loop reads: images to train on and a hold-out for model selection."""

    train_images: torch.Tensor  # (N, C, H, W) in [0, 1]; (N, 1, 28, 28) for MNIST
    validation_images: torch.Tensor  # (V, C, H, W)


@dataclass
class TrainOptions:
    device: str = "cpu"
    epochs: int | None = None  # None: the recipe's
    seed: int | None = None  # None: the recipe's
    max_steps_per_epoch: int | None = None  # for smoke tests
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    # Fine-tuning: a checkpoint folder of the same architecture and config whose weights start the run
    # (e.g. a sigma-15 denoiser from the sigma-25 one), and the peak learning rate (None: the recipe's).
    init_from: Path | None = None
    learning_rate: float | None = None
    # The second stage of a two-stage recipe (Recipe.fine_tune): the first stage's result, whose selected
    # weights start the run (instead of `init_from`'s), with `first_stage_run` its training facts for the card.
    first_stage: TrainResult | None = None
    first_stage_run: dict[str, Any] | None = None
    # The class to build instead of the registry's `recipe.architecture`: a lever that is measured but never served
    # (the VampPrior of models.evaluation.vae_levers) stays out of the registry, which lists what the service loads.
    architecture_class: type[Architecture] | None = None


@dataclass
class TrainResult:
    model: Architecture  # the selected (best validation) weights, in eval mode on the CPU
    epochs: int
    seed: int
    selected_epoch: int  # 1-based
    final_train_loss: float  # mean training loss of the last epoch
    validation_losses: list[float]  # one per epoch
    train_curve: list[tuple[float, float]]  # (fractional epoch, mean loss since the previous point)
    duration_s: float
    images_per_second: float
    learning_rate: float  # the peak of the cosine schedule
    initialised_from: dict[str, Any] | None = None  # {"checkpoint", "sha256", "training"} when fine-tuned


HISTORY_KEYS = ("command", "objective", "epochs", "learning_rate", "device", "cpu", "duration_s", "initialised_from")
# What a card keeps of a first stage run in the same command: its objective, schedule and time.
STAGE_KEYS = (
    *("objective", "loss", "kl_warmup_epochs", "samples", "epochs", "selected_epoch", "learning_rate"),
    *("duration_s", "images_per_second", "final_train_loss", "validation_losses", "initialised_from"),
)


def initial_weights(model: Architecture, recipe: Recipe, directory: Path) -> dict[str, Any]:
    """Load a checkpoint's weights into `model`; -> what the card records of them.

    The checkpoint must be of the recipe's architecture with tensors of the same names and shapes (config
    fields that are labels, such as a denoiser's sigma, may differ): anything else is a CheckpointError
    naming both, not a silent partial load.
    """
    start = load_checkpoint(directory)
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    start_shapes = {name: tuple(tensor.shape) for name, tensor in start.model.state_dict().items()}
    if start.card.architecture != recipe.architecture or start_shapes != shapes:
        raise CheckpointError(
            f"{directory}: a {start.card.architecture} with {start.model.config_dict()} cannot start recipe "
            f"{recipe.name!r} ({recipe.architecture} with {model.config_dict()}): its weights do not fit"
        )
    model.load_state_dict(start.model.state_dict())
    # How the starting weights were trained, so that the card still tells the whole history (and time).
    history = {key: start.card.training[key] for key in HISTORY_KEYS if key in start.card.training}
    return {"checkpoint": start.card.name, "sha256": start.card.weights_sha256, "training": history}


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


@torch.no_grad()
def validation_loss(
    recipe: Recipe, model: Architecture, inputs: torch.Tensor, targets: torch.Tensor, device: torch.device, seed: int
) -> float:
    """Mean validation loss over fixed (inputs, targets); any sampling inside the loss uses a fixed seed."""
    model.eval()
    generator = make_generator(seed, device)
    total = 0.0
    for start in range(0, len(inputs), recipe.batch_size):
        batch_inputs = inputs[start : start + recipe.batch_size].to(device)
        batch_targets = targets[start : start + recipe.batch_size].to(device)
        loss = recipe.objective.validation_loss(model, batch_inputs, batch_targets, generator)
        total += float(loss) * len(batch_inputs)
    return total / len(inputs)


def train(recipe: Recipe, data: ImageSplit, options: TrainOptions | None = None) -> TrainResult:
    """Train `recipe` on `data` and return the weights of the epoch with the best validation loss."""
    options = options or TrainOptions()
    epochs = options.epochs if options.epochs is not None else recipe.epochs
    seed = options.seed if options.seed is not None else recipe.seed
    device = torch.device(options.device)
    torch.manual_seed(seed)  # initial weights
    if options.architecture_class is not None:
        model = options.architecture_class.from_kwargs(recipe.architecture_config)
    else:
        model = build_model(recipe.architecture, recipe.architecture_config)
    initialised_from = initial_weights(model, recipe, options.init_from) if options.init_from else None
    if options.first_stage is not None:
        model.load_state_dict(options.first_stage.model.state_dict())
        history = {key: value for key, value in (options.first_stage_run or {}).items() if key in STAGE_KEYS}
        initialised_from = {"first_stage": history}
    model = model.to(device)
    learning_rate = options.learning_rate if options.learning_rate is not None else recipe.learning_rate
    data_generator = make_generator(seed)  # data order and corruptions (on the CPU: same on any device)
    model_generator = make_generator(seed + 1, device)  # sampling inside the loss (VAE reparameterisation)
    # The hold-out pairs are drawn once, so every epoch is scored on the same corrupted digits.
    val_inputs, val_targets = recipe.objective.make_batch(data.validation_images, make_generator(seed + 2))

    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(data.train_images) / recipe.batch_size)
    if options.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, options.max_steps_per_epoch)
    total_steps = epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps))
    )

    train_curve: list[tuple[float, float]] = []
    validation_losses: list[float] = []
    best_loss, best_state, selected_epoch = math.inf, copy.deepcopy(model.state_dict()), 0
    curve_every = max(1, steps_per_epoch // 10)
    images_seen, started = 0, time.perf_counter()
    epoch_loss = math.nan
    for epoch in range(epochs):
        model.train()
        progress = Progress(f"epoch {epoch + 1}/{epochs}", steps_per_epoch, options.stream)
        order = torch.randperm(len(data.train_images), generator=data_generator)
        epoch_total, epoch_count, curve_total, curve_count = 0.0, 0, 0.0, 0
        for step in range(steps_per_epoch):
            clean = data.train_images[order[step * recipe.batch_size : (step + 1) * recipe.batch_size]]
            inputs, targets = recipe.objective.make_batch(clean, data_generator)
            loss = recipe.objective.loss(
                model, inputs.to(device), targets.to(device), epoch + step / steps_per_epoch, model_generator
            )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"{recipe.name}: loss became {value} at epoch {epoch + 1}, step {step + 1}")
            epoch_total += value * len(clean)
            epoch_count += len(clean)
            curve_total, curve_count = curve_total + value, curve_count + 1
            if curve_count == curve_every or step == steps_per_epoch - 1:
                train_curve.append((epoch + (step + 1) / steps_per_epoch, curve_total / curve_count))
                curve_total, curve_count = 0.0, 0
            images_seen += len(clean)
            progress.update(step + 1, epoch_total / epoch_count, images_seen / (time.perf_counter() - started))
        epoch_loss = epoch_total / epoch_count
        val_loss = validation_loss(recipe, model, val_inputs, val_targets, device, seed + 3)
        validation_losses.append(val_loss)
        if val_loss < best_loss:
            best_loss, best_state, selected_epoch = val_loss, copy.deepcopy(model.state_dict()), epoch + 1
        progress.finish(f"train loss {epoch_loss:.5g}  validation loss {val_loss:.5g}")
    duration = time.perf_counter() - started
    model.load_state_dict(best_state)
    model.to("cpu").eval()
    return TrainResult(
        model=model,
        epochs=epochs,
        seed=seed,
        selected_epoch=selected_epoch,
        final_train_loss=epoch_loss,
        validation_losses=validation_losses,
        train_curve=train_curve,
        duration_s=duration,
        images_per_second=images_seen / duration,
        learning_rate=learning_rate,
        initialised_from=initialised_from,
    )


def train_stages(recipe: Recipe, split: ImageSplit, options: TrainOptions) -> tuple[Recipe, TrainResult, int]:
    """Train `recipe`; -> (the recipe of the stage that made the weights, its result, the epochs asked of the
    first stage that ran). A two-stage recipe (`Recipe.fine_tune`) trains its second stage from the first's
    selected weights; `init_from` gives it the first stage's weights instead, so only the second runs. The
    options' epochs and learning rate are those of the first stage that runs. Every pipeline that honours
    `Recipe.fine_tune` trains through here (models.training.mnist does)."""
    if recipe.fine_tune is None:
        result = train(recipe, split, options)
        return recipe, result, result.epochs
    second = recipe.fine_tune_stage()
    if options.init_from is not None:
        result = train(second, split, options)
        return second, result, result.epochs
    first = train(recipe, split, options)
    follow = dataclasses.replace(
        options,
        epochs=None,
        learning_rate=None,
        first_stage=first,
        first_stage_run=training_run(recipe, first, options.device),
    )
    return second, train(second, split, follow), first.epochs


def training_run(recipe: Recipe, result: TrainResult, device: str, loss_digits: int = 6) -> dict[str, Any]:
    """What every model card says of how its weights were trained: objective, schedule, machine, duration."""
    facts: dict[str, Any] = {
        **recipe.objective.describe(),
        "epochs": result.epochs,
        "selected_epoch": result.selected_epoch,
        "batch_size": recipe.batch_size,
        "optimiser": "Adam",
        "learning_rate": result.learning_rate,
        "learning_rate_schedule": "cosine decay to 0 over all steps",
        "weight_decay": recipe.weight_decay,
        "seed": result.seed,
        "device": device,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),  # the last bits of the weights depend on it
        "cpu": cpu_description(),
        "duration_s": round(result.duration_s, 1),
        FINISHED_AT: utc_now_iso(),  # `created` of /v1/models
        "images_per_second": round(result.images_per_second, 1),
        "final_train_loss": round(result.final_train_loss, loss_digits),
        "validation_losses": [round(loss, loss_digits) for loss in result.validation_losses],
    }
    if result.initialised_from is not None:
        facts["initialised_from"] = result.initialised_from  # fine-tuned: the duration is this run's only
    return facts
