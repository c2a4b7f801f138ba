"""The command line of training: `python -m models.train` (and `ae train`).

    python -m models.train --list
    python -m models.train mnist-denoise --data-dir /work/shared/datasets/mnist [--out checkpoints]
                                         [--device cpu|cuda] [--epochs N] [--seed S] [--threads 2]
    python -m models.train t91-sr-x2 --data-dir /work/shared/datasets          # Train400/ and T91/ under it
    python -m models.train photo-sr-x2 --data-dir /work/shared/datasets --minutes 20   # residual SR, resumable

Or train a task on a folder of your own images (see models.training.own_images and models.data.image_folder):

    python -m models.train --images-dir photos/ --task reconstruct|denoise|super-resolve|vae --name my-model
                           [--size 32 | --size 64x48] [--channels 1|3] [--held-out 0.1] [--scale 2|4]
                           [--latent-size D] [--epochs N] [--seed S] [--out checkpoints]

The photo denoisers of every noise level train on a time budget (or a number of steps), resumably, from
their state in `training-state/<name>/` (or, where none exists, continuing the served checkpoint):

    python -m models.train photo-denoise-gray --data-dir /work/shared/datasets --minutes 20 [--threads 1]
                                              [--steps N] [--precision bfloat16|float32] [--device cuda]
                                              [--state-dir training-state] [--publish if-better|always|never]

It parses and checks the arguments, then hands them to one pipeline: MNIST (`models.training.mnist`),
photographs (`models.training.photo.natural`), the photo denoisers (`models.training.photo.denoise`) or your
own images (`models.training.own_images`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from models.architectures import ArchitectureError, build_model
from models.checkpoint import MODEL_NAME_PATTERN, MODEL_NAME_RULE, CheckpointError
from models.data.image_folder import hold_out, load_image_folder, parse_size
from models.data.mnist import DataError, load_mnist
from models.training.loop import TrainOptions
from models.training.mnist import TrainingData, run
from models.training.own_images import FolderRun, default_epochs, train_folder
from models.training.photo.denoise import PHOTO_DENOISE_RECIPES, PUBLISH_POLICIES, install_stop_handlers
from models.training.photo.denoise import run as run_photo_denoise
from models.training.photo.natural import run_natural
from models.training.photo.recipes import PATCH_LOSSES, PhotoDenoiseRecipe
from models.training.photo.super_resolution import PHOTO_SR_RECIPES
from models.training.photo.super_resolution import run as run_photo_sr
from models.training.recipes import IMAGE_FOLDER_TASKS, RECIPES, image_folder_recipe

DATA_DIR_HINT = "pass the folder holding the MNIST IDX files, e.g. --data-dir /work/shared/datasets/mnist"


def command_line(argv: Sequence[str]) -> str:
    """The command as typed, for the card."""
    return shlex.join(["python", "-m", "models.train", *argv])


def describe_recipes() -> str:
    width = max(len(name) for name in (*RECIPES, *PHOTO_DENOISE_RECIPES, *PHOTO_SR_RECIPES))
    lines = [
        f"{name:<{width}}  {recipe.epochs:>3} epochs  {', '.join(recipe.tasks):<28} {recipe.description}"
        for name, recipe in RECIPES.items()
    ]
    lines += [
        f"{name:<{width}}  --minutes   {'denoise':<28} {recipe.description}"
        for name, recipe in PHOTO_DENOISE_RECIPES.items()
    ]
    lines += [
        f"{name:<{width}}  --minutes   {'super-resolve':<28} {recipe.description}"
        for name, recipe in PHOTO_SR_RECIPES.items()
    ]
    return "\n".join(lines)


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
    parser.add_argument(
        "recipe",
        nargs="?",
        choices=sorted([*RECIPES, *PHOTO_DENOISE_RECIPES, *PHOTO_SR_RECIPES]),
        help="recipe name (see --list)",
    )
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
    parser.add_argument(
        "--learning-rate",
        type=float,
        help="override the recipe's peak learning rate (photo denoisers: also the constant rate of continued training)",
    )
    photo = parser.add_argument_group("the photo denoisers (photo-denoise-*): a time or step budget, resumable")
    budget = photo.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="training time; the learning-rate schedule ends with it")
    budget.add_argument("--steps", type=int, help="optimiser steps (a reproducible budget)")
    photo.add_argument("--precision", choices=("bfloat16", "float32"), default="bfloat16", help="autocast")
    photo.add_argument(
        "--loss",
        choices=list(PATCH_LOSSES),
        help="override the recipe's objective: mse (per pixel) or psnr (each patch's dB counted alike)",
    )
    photo.add_argument("--limit-images", type=int, help="train on the first N images only (smoke tests)")
    photo.add_argument(
        "--state-dir",
        type=Path,
        default=Path("training-state"),
        help="parent folder of the resumable state, <state-dir>/<name>/ (default: training-state)",
    )
    photo.add_argument(
        "--publish",
        choices=PUBLISH_POLICIES,
        default="if-better",
        help="write the served checkpoint at the end: if its validation PSNR improved (default), always, never",
    )
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
            parser.error(f"--name {arguments.name!r}: use {MODEL_NAME_RULE}")
        if not 0.0 < arguments.held_out < 1.0:
            parser.error("--held-out must be between 0 and 1, e.g. 0.1")
        if arguments.latent_size is not None and arguments.latent_size < 1:
            parser.error("--latent-size must be at least 1")
        return arguments
    if arguments.recipe is None:
        parser.error("a recipe name is required (see --list), or --images-dir with --task and --name")
    if arguments.data_dir is None:
        parser.error(f"--data-dir is required: {DATA_DIR_HINT}")
    budgeted = (*PHOTO_DENOISE_RECIPES, *PHOTO_SR_RECIPES)
    if arguments.recipe in budgeted and arguments.minutes is None and arguments.steps is None:
        parser.error(f"{arguments.recipe} trains on a budget: pass --minutes M or --steps N")
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.list:
        print(describe_recipes())
        return 0
    torch.set_num_threads(arguments.threads)
    command = command_line(list(sys.argv[1:] if argv is None else argv))
    if arguments.images_dir is not None:
        return train_own_images(arguments, command)
    if arguments.recipe in PHOTO_DENOISE_RECIPES:
        return train_photo_denoiser(arguments, command)
    if arguments.recipe in PHOTO_SR_RECIPES:
        return train_photo_super_resolution(arguments, command)
    recipe = RECIPES[arguments.recipe]
    options = TrainOptions(
        device=arguments.device,
        epochs=arguments.epochs,
        seed=arguments.seed,
        init_from=arguments.init_from,
        learning_rate=arguments.learning_rate,
    )
    if recipe.dataset != "mnist":
        try:
            card = run_natural(recipe, arguments.data_dir, arguments.out, options, command)
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
    report(arguments.out / recipe.name, card.training, "validation")
    return 0


def photo_denoise_recipe(arguments: argparse.Namespace) -> PhotoDenoiseRecipe:
    """The registered recipe with the command line's overrides: `--loss`, and `--learning-rate` as the peak of
    a run from scratch and the constant rate of continued training alike."""
    recipe = PHOTO_DENOISE_RECIPES[arguments.recipe]
    if arguments.loss:
        recipe = replace(recipe, loss=arguments.loss)
    if arguments.learning_rate:
        recipe = replace(recipe, learning_rate=arguments.learning_rate, continue_learning_rate=arguments.learning_rate)
    return recipe


def train_photo_denoiser(arguments: argparse.Namespace, command: str) -> int:
    """`photo-denoise-*`: train (or resume) on the budget, then say what was written and the hold-out's PSNR.
    SIGTERM or SIGINT stops the run after the current step, with its state saved."""
    install_stop_handlers()
    try:
        card = run_photo_denoise(
            photo_denoise_recipe(arguments),
            arguments.data_dir,
            arguments.out,
            arguments.minutes,
            arguments.steps,
            arguments.precision,
            arguments.threads,
            command,
            arguments.limit_images,
            state_root=arguments.state_dir,
            device=arguments.device,
            publish=arguments.publish,
        )
    except (FileNotFoundError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if card is None:
        print(f"state in {arguments.state_dir / arguments.recipe}; served checkpoint unchanged", file=sys.stderr)
        return 0
    print(f"wrote {arguments.out / card.name} ({card.training['minutes']} min)", file=sys.stderr)
    for key, value in card.training["held_out_validation_upload_protocol"].items():
        print(f"  held-out {key}: {value}", file=sys.stderr)
    return 0


def train_photo_super_resolution(arguments: argparse.Namespace, command: str) -> int:
    """`photo-sr-x*`: train (or resume) for the budget more; SIGTERM or SIGINT stops it with its state saved."""
    install_stop_handlers()
    try:
        card = run_photo_sr(
            PHOTO_SR_RECIPES[arguments.recipe],
            arguments.data_dir,
            arguments.out,
            arguments.minutes,
            arguments.steps,
            arguments.threads,
            command,
            state_root=arguments.state_dir,
            device=arguments.device,
            publish=arguments.publish,
            limit_images=arguments.limit_images,
        )
    except (FileNotFoundError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    written = f"wrote {arguments.out / card.name}" if card else "served checkpoint unchanged"
    print(f"{written}; state in {arguments.state_dir / arguments.recipe}", file=sys.stderr)
    return 0


def train_own_images(arguments: argparse.Namespace, command: str) -> int:
    """`--images-dir ...`: read the folder, choose the recipe for it, train, and say what was written."""
    seed = arguments.seed if arguments.seed is not None else 0
    try:
        folder = load_image_folder(arguments.images_dir, arguments.channels, arguments.size)
        train_count = len(hold_out(len(folder.images), arguments.held_out, seed)[0])
        recipe = image_folder_recipe(
            arguments.task,
            arguments.name,
            folder.channels,
            folder.size,
            scale=arguments.scale,
            latent_size=arguments.latent_size,
            epochs=arguments.epochs or default_epochs(train_count),
            seed=seed,
        )
        build_model(recipe.architecture, recipe.architecture_config)  # refuse a size the network cannot take now
    except ValueError as exc:  # ImageFolderError, ArchitectureError and the recipe's size checks
        hint = " (pass --size, e.g. --size 32, to resize the images)" if isinstance(exc, ArchitectureError) else ""
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 1
    for skipped in folder.skipped:
        print(f"skipped {folder.root / skipped.path}: {skipped.reason}", file=sys.stderr)
    print(
        f"{len(folder.files)} images from {folder.root} ({folder.size_rule}; {folder.channels_rule}); "
        f"{len(folder.skipped)} skipped",
        file=sys.stderr,
    )
    run_ = FolderRun(recipe, folder, arguments.held_out, command)
    options = TrainOptions(device=arguments.device, epochs=arguments.epochs, seed=arguments.seed)
    card = train_folder(run_, arguments.out, options)
    report(arguments.out / recipe.name, card.training, "held-out")
    return 0


def report(directory: Path, training: dict[str, Any], figures: str) -> None:
    """What was written, the epoch kept, how long it took, and the hold-out's figures."""
    print(
        f"wrote {directory} (selected epoch {training['selected_epoch']}, {training['duration_s']} s)",
        file=sys.stderr,
    )
    for key, value in training["validation"].items():
        print(f"  {figures} {key}: {value}", file=sys.stderr)
