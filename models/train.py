"""Train one recipe and write its checkpoint folder.

    python -m models.train --list
    python -m models.train mnist-denoise --data-dir /work/shared/datasets/mnist [--out checkpoints]
                                         [--device cpu|cuda] [--epochs N] [--seed S] [--threads 2]

Or train a task on a folder of your own images (see models/folder_training.py and models/image_folder.py):

    python -m models.train --images-dir photos/ --task reconstruct|denoise|super-resolve|vae --name my-model
                           [--size 32 | --size 64x48] [--channels 1|3] [--held-out 0.1] [--scale 2|4]
                           [--latent-size D] [--epochs N] [--seed S] [--out checkpoints]

The run is reproducible: the seed fixes the initial weights (torch.manual_seed), the data order and
every corruption (a seeded generator). The last 5,000 training digits are held out for model
selection (the epoch with the best validation loss is kept); the test set is never touched here.
The folder gets `model.safetensors`, `config.json` (the model card), `samples.png` and `loss.png`.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from models.architectures import Architecture, build_model
from models.checkpoint import (
    FINISHED_AT,
    MODEL_NAME_PATTERN,
    CheckpointError,
    InputSpec,
    ModelCard,
    load_checkpoint,
    save_checkpoint,
    utc_now_iso,
)
from models.data import MNIST_LICENCE, DataError, MnistSplit, load_mnist
from models.image_folder import parse_size
from models.plots import image_grid, loss_curve
from models.progress import Progress
from models.recipes import IMAGE_FOLDER_TASKS, RECIPES, Recipe
from models.validation import ValidationData, run_checks

VALIDATION_SIZE = 5_000  # the last training digits, held out for model selection
KNN_INDEX_SIZE = 20_000  # training digits the validation k-NN check matches against
SAMPLE_COUNT = 12  # columns of samples.png
DATA_DIR_HINT = "pass the folder holding the MNIST IDX files, e.g. --data-dir /work/shared/datasets/mnist"


@dataclass
class ImageSplit:
    """What the training loop reads: images to train on and a hold-out for model selection."""

    train_images: torch.Tensor  # (N, C, H, W) in [0, 1]; (N, 1, 28, 28) for MNIST
    validation_images: torch.Tensor  # (V, C, H, W)


@dataclass
class TrainingData(ImageSplit):
    """MNIST: the split plus labels, which only the validation checks read (k-NN of embeddings)."""

    train_labels: torch.Tensor  # (N,) only for the validation k-NN index, never for training
    validation_labels: torch.Tensor  # (V,)

    @classmethod
    def hold_out(cls, split: MnistSplit, validation_size: int = VALIDATION_SIZE) -> TrainingData:
        """Split off the last `validation_size` digits of a training split."""
        if not 0 < validation_size < len(split.images):
            raise ValueError(f"validation_size must be in (0, {len(split.images)}), got {validation_size}")
        cut = len(split.images) - validation_size
        return cls(
            train_images=split.images[:cut],
            validation_images=split.images[cut:],
            train_labels=split.labels[:cut],
            validation_labels=split.labels[cut:],
        )


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


HISTORY_KEYS = ("command", "epochs", "learning_rate", "device", "cpu", "duration_s", "initialised_from")


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
    model = build_model(recipe.architecture, recipe.architecture_config)
    initialised_from = initial_weights(model, recipe, options.init_from) if options.init_from else None
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


def cpu_description() -> str:
    """The processor model and core count, for the model card (figures depend on the machine)."""
    model_name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model_name}, {os.cpu_count()} logical cores visible, {torch.get_num_threads()} torch threads"


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


def model_card(
    recipe: Recipe, result: TrainResult, data: TrainingData, device: str, validation: dict[str, float]
) -> ModelCard:
    training: dict[str, Any] = {
        "recipe": recipe.name,
        "command": (
            f"python -m models.train {recipe.name} --data-dir MNIST_DIR --seed {result.seed} --epochs {result.epochs} "
            f"--threads {torch.get_num_threads()}"
        ),
        "dataset": "MNIST",
        "licence": MNIST_LICENCE,
        "train_images": len(data.train_images),
        "validation_images": f"the last {len(data.validation_images)} training digits (model selection only)",
        **training_run(recipe, result, device),
        "validation": validation,
    }
    return ModelCard(
        name=recipe.name,
        tasks=list(recipe.tasks),
        architecture=recipe.architecture,
        architecture_config=result.model.config_dict(),
        input=InputSpec(channels=1, height=recipe.input_size, width=recipe.input_size, domain="mnist"),
        scale=recipe.scale,
        latent_size=recipe.latent_size,
        description=recipe.description,
        training=training,
    )


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


def run(recipe: Recipe, data: TrainingData, out: Path, options: TrainOptions | None = None) -> ModelCard:
    """Train, check on the hold-out, and write the checkpoint folder `out/<recipe name>`."""
    options = options or TrainOptions()
    result = train(recipe, data, options)
    index_size = min(KNN_INDEX_SIZE, len(data.train_images))
    validation_data = ValidationData(
        images=data.validation_images,
        labels=data.validation_labels,
        index_images=data.train_images[:index_size],
        index_labels=data.train_labels[:index_size],
        seed=result.seed,
    )
    validation = run_checks(recipe.tasks, result.model, validation_data, torch.device("cpu"))
    card = model_card(recipe, result, data, options.device, validation)
    directory = Path(out) / recipe.name
    card = save_checkpoint(result.model, card, directory)
    write_figures(recipe, result, data, directory)
    return card


def describe_recipes() -> str:
    width = max(len(name) for name in RECIPES)
    return "\n".join(
        f"{name:<{width}}  {recipe.epochs:>3} epochs  {', '.join(recipe.tasks):<28} {recipe.description}"
        for name, recipe in RECIPES.items()
    )


def size_argument(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m models.train",
        description="Train one recipe into checkpoints/<name>, or a task on your own images (--images-dir).",
        epilog="examples:\n"
        "  python -m models.train mnist-denoise --data-dir /data/mnist\n"
        "  python -m models.train --images-dir photos/ --task denoise --name my-denoiser --size 32",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", nargs="?", choices=sorted(RECIPES), help="recipe name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the recipes and exit")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help=f"MNIST IDX files (gzip or not); {DATA_DIR_HINT}; for the natural-image recipes (bsd-*, t91-*) "
        "the folder holding Train400/ and T91/, e.g. /work/shared/datasets",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("checkpoints"), help="parent folder of the checkpoint (default: checkpoints)"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--epochs", type=int, help="override the recipe's number of epochs (own images: at least 20 and 1,500 steps)"
    )
    parser.add_argument("--seed", type=int, help="override the recipe's seed")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument(
        "--init-from",
        type=Path,
        metavar="CHECKPOINT_DIR",
        help="fine-tune: start from this checkpoint's weights (same architecture and config as the recipe)",
    )
    parser.add_argument("--learning-rate", type=float, help="override the recipe's peak learning rate")
    own = parser.add_argument_group("your own images (instead of a recipe)")
    own.add_argument(
        "--images-dir", type=Path, metavar="PATH", help="folder of images, searched recursively (PNG, JPEG, ...)"
    )
    own.add_argument("--task", choices=list(IMAGE_FOLDER_TASKS), help="what the model learns to do")
    own.add_argument("--name", metavar="NAME", help="the checkpoint's name (lowercase letters, digits, '.', '_', '-')")
    own.add_argument(
        "--size",
        type=size_argument,
        metavar="N|WxH",
        help="resize every image: N or WIDTHxHEIGHT (default: the images' one size)",
    )
    own.add_argument("--channels", type=int, choices=(1, 3), help="1 grayscale, 3 RGB (default: detected)")
    own.add_argument(
        "--held-out",
        type=float,
        default=0.1,
        metavar="FRACTION",
        help="share of the images held out for the metrics (default: 0.1)",
    )
    own.add_argument("--scale", type=int, choices=(2, 4), default=2, help="super-resolution factor (default: 2)")
    own.add_argument("--latent-size", type=int, metavar="D", help="code size of reconstruct (32) and vae (16)")
    arguments = parser.parse_args(argv)
    if arguments.list:
        return arguments
    if arguments.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda was asked for, but torch sees no CUDA device")
    if arguments.epochs is not None and arguments.epochs < 1:
        parser.error("--epochs must be at least 1")
    if arguments.images_dir is not None:
        if arguments.recipe is not None or arguments.data_dir is not None:
            parser.error("--images-dir trains on your images: leave out the recipe name and --data-dir")
        if arguments.task is None or arguments.name is None:
            parser.error("--images-dir needs --task and --name (e.g. --task denoise --name my-denoiser)")
        if not MODEL_NAME_PATTERN.match(arguments.name):
            parser.error(f"--name {arguments.name!r}: use 1-64 lowercase letters, digits, '.', '_' and '-'")
        if not 0.0 < arguments.held_out < 1.0:
            parser.error("--held-out must be between 0 and 1, e.g. 0.1")
        if arguments.latent_size is not None and arguments.latent_size < 1:
            parser.error("--latent-size must be at least 1")
        return arguments
    if arguments.recipe is None:
        parser.error("a recipe name is required (see --list), or --images-dir with --task and --name")
    if arguments.data_dir is None:
        parser.error(f"--data-dir is required: {DATA_DIR_HINT}")
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.list:
        print(describe_recipes())
        return 0
    torch.set_num_threads(arguments.threads)
    if arguments.images_dir is not None:
        # Imported here, not at the top: models.folder_training builds on this module.
        from models.folder_training import main_image_folder

        return main_image_folder(arguments, list(sys.argv[1:] if argv is None else argv))
    recipe = RECIPES[arguments.recipe]
    options = TrainOptions(
        device=arguments.device,
        epochs=arguments.epochs,
        seed=arguments.seed,
        init_from=arguments.init_from,
        learning_rate=arguments.learning_rate,
    )
    if recipe.dataset != "mnist":
        # Imported here, not at the top: models.natural_training builds on this module.
        from models.natural_training import command_line, run_natural

        try:
            card = run_natural(recipe, arguments.data_dir, arguments.out, options, command_line(list(sys.argv[1:])))
        except (FileNotFoundError, CheckpointError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {arguments.out / recipe.name} ({card.training['duration_s']} s)", file=sys.stderr)
        return 0
    try:
        data = TrainingData.hold_out(load_mnist(arguments.data_dir, "train"))
        card = run(recipe, data, arguments.out, options)
    except (DataError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {arguments.out / recipe.name} (selected epoch {card.training['selected_epoch']}, "
        f"{card.training['duration_s']} s)",
        file=sys.stderr,
    )
    for key, value in card.training["validation"].items():
        print(f"  validation {key}: {value}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
