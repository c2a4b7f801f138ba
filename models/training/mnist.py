"""The MNIST pipeline: train a recipe of `models.training.recipes` on MNIST digits into `checkpoints/<name>/`.

The last 5,000 training digits are held out for model selection (the epoch with the best validation loss
is kept) and for the quick checks of `models.training.validation`, kept in the card; the test set is never touched
here. The folder gets `model.safetensors`, `config.json` (the model card), `samples.png` and `loss.png`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.architectures.conditional_vae import with_label_plane
from models.checkpoint import InputSpec, ModelCard
from models.data.mnist import MNIST_LICENCE, MnistSplit
from models.training.finish import finish, recipe_card
from models.training.loop import ImageSplit, TrainOptions, TrainResult, train_stages, training_run
from models.training.recipes import Recipe
from models.training.validation import ValidationData, run_checks

VALIDATION_SIZE = 5_000  # the last training digits, held out for model selection
KNN_INDEX_SIZE = 20_000  # training digits the validation k-NN check matches against


@dataclass
class TrainingData(ImageSplit):
    """MNIST: the split plus labels, which only the validation checks read (k-NN of embeddings)."""

    train_labels: torch.Tensor  # (N,) for the validation k-NN index, and for objectives that read labels
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

    def with_label_planes(self) -> ImageSplit:
        """The split for objectives that read labels: each image with a constant plane of its class."""
        return ImageSplit(
            train_images=with_label_plane(self.train_images, self.train_labels),
            validation_images=with_label_plane(self.validation_images, self.validation_labels),
        )


def command(recipe: Recipe, options: TrainOptions, seed: int, epochs: int) -> str:
    """The `python -m models.train` line that makes these weights again (MNIST_DIR: your copy of the files)."""
    words = ["python", "-m", "models.train", recipe.name, "--data-dir", "MNIST_DIR", "--seed", str(seed)]
    words += ["--epochs", str(epochs)]
    if options.init_from is not None:
        words += ["--init-from", str(options.init_from)]
    if options.learning_rate is not None:
        words += ["--learning-rate", f"{options.learning_rate:g}"]
    return shlex.join([*words, "--threads", str(torch.get_num_threads())])


def model_card(
    recipe: Recipe,
    result: TrainResult,
    data: TrainingData,
    device: str,
    validation: dict[str, float],
    command_line: str,
) -> ModelCard:
    training: dict[str, Any] = {
        "recipe": recipe.name,
        "command": command_line,
        "dataset": "MNIST",
        "licence": MNIST_LICENCE,
        "train_images": len(data.train_images),
        "validation_images": f"the last {len(data.validation_images)} training digits (model selection only)",
        **training_run(recipe, result, device),
        "validation": validation,
    }
    spec = InputSpec(channels=1, height=recipe.input_size, width=recipe.input_size, domain="mnist")
    return recipe_card(recipe, result, spec, training)


def run(recipe: Recipe, data: TrainingData, out: Path, options: TrainOptions | None = None) -> ModelCard:
    """Train, check on the hold-out, and write the checkpoint folder `out/<recipe name>`."""
    options = options or TrainOptions()
    split = data.with_label_planes() if recipe.objective.reads_labels else data
    stage, result, epochs_asked = train_stages(recipe, split, options)
    index_size = min(KNN_INDEX_SIZE, len(data.train_images))
    validation_data = ValidationData(
        images=data.validation_images,
        labels=data.validation_labels,
        index_images=data.train_images[:index_size],
        index_labels=data.train_labels[:index_size],
        seed=result.seed,
    )
    validation = run_checks(recipe.tasks, result.model, validation_data, torch.device("cpu"))
    card = model_card(
        stage, result, data, options.device, validation, command(recipe, options, result.seed, epochs_asked)
    )
    return finish(stage, result, split, card, out)
