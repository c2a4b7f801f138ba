"""The task table: every task the service runs, named once.

A task is one thing a model can be asked to do, run through one batcher per model. Its row says:

- `name`: what the service, its batchers and its metrics call it (`"vae-decode"`);
- `card_task`: the word a model card lists in `tasks` to allow it (`"vae"`; the vocabulary is
  `models.checkpoint.card_tasks`, which `register` extends);
- `protocol`: the typed protocol (`models.architectures.protocols`) an architecture implements for it,
  and `call`, which runs that method on a batch (and its `extras`, by name);
- `input_kind`: what a batch holds (`images` (n, C, H, W), `low-resolution images` that come back `scale`
  times larger, or `latents` (n, D)), from which the warm-up input and the expected image size follow;
- `extras`: the names of per-item inputs that travel with the items through the shared batches, each
  (n,) (`sigma`: each image's noise level, a per-request setting), given to `call` by name.

Adding a task: add a row here (`register`), implement its protocol on an architecture, and add the route
that calls the service with it (docs/architecture.md walks through it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, cast

import torch

from models.architectures import ARCHITECTURES
from models.architectures.base import MNIST_IMAGE_SIZE
from models.architectures.protocols import (
    Classifier,
    ConditionalVariationalCoder,
    Denoiser,
    Embedder,
    NoiseLevelDenoiser,
    Reconstructor,
    SuperResolver,
    VariationalCoder,
)
from models.checkpoint import ModelCard, register_card_task, unregister_card_task

InputKind = Literal["images", "low-resolution images", "latents"]
TaskOutput = torch.Tensor | tuple[torch.Tensor, ...]
# Input size of a warm-up pass for models that take any size.
ANY_SIZE_WARM_UP = (32, 32)


@dataclass(frozen=True)
class Task:
    name: str
    card_task: str
    protocol: type
    call: Callable[..., TaskOutput]  # (model implementing `protocol`, batch, **extras) -> outputs
    input_kind: InputKind = "images"
    # A capability some models of the card task have (denoising told the noise level), not a promise of
    # every model that lists the card task: warm-ups run it only on the models that implement it.
    optional: bool = False
    extras: tuple[str, ...] = ()

    def run(self, model: object, batch: torch.Tensor, extras: Mapping[str, torch.Tensor] | None = None) -> TaskOutput:
        """Run the model's method for this task on a batch and its per-item extras (each (B,))."""
        return self.call(model, batch, **(extras or {}))

    def warm_up_extras(self, items: int) -> dict[str, torch.Tensor]:
        """Blank per-item extras for `items` warm-up items (a noise level of 0)."""
        return {name: torch.zeros(items) for name in self.extras}

    def warm_up_input(self, card: ModelCard) -> torch.Tensor:
        """A blank input of one item, of the size the model reads: (1, C, H, W) images or (1, D) latents."""
        if self.input_kind == "latents":
            return torch.zeros((1, card.latent_size or 2))
        height, width = expected_input_size(card, self) or ANY_SIZE_WARM_UP
        return torch.zeros((1, card.input.channels, height, width))

    def output_scale(self, card: ModelCard) -> int:
        """How many times larger (per side) than its input an output image is."""
        return (card.scale or 1) if self.input_kind == "low-resolution images" else 1


def expected_input_size(card: ModelCard, task: Task) -> tuple[int, int] | None:
    """(height, width) the model reads for `task`, or None when any size goes.

    MNIST-domain models read the 28x28 frame, their super-resolution models 28/scale; other models the
    size on their card, if any.
    """
    spec = card.input
    if spec.height and spec.width:
        return spec.height, spec.width
    if spec.domain != "mnist":
        return None
    if task.input_kind == "low-resolution images":
        if not card.scale:
            return None
        return MNIST_IMAGE_SIZE[0] // card.scale, MNIST_IMAGE_SIZE[1] // card.scale
    return MNIST_IMAGE_SIZE


def _reconstruct_with_error(model: Reconstructor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-> the reconstructions and each image's mean squared error against its input (the anomaly score)."""
    reconstructions = model.reconstruct(images)  # (B, C, H, W)
    errors = (reconstructions.float() - images.float()).pow(2).flatten(1).mean(dim=1)  # (B,)
    return reconstructions, errors


DENOISE = Task("denoise", "denoise", Denoiser, lambda model, x: cast(Denoiser, model).denoise(x))
# Denoising told the noise level (given by the client or estimated by the service): for the models of
# every noise level (FFDNet). Not a default's task of its own: /v1/denoise uses it when its model has it.
DENOISE_AT_NOISE_LEVEL = Task(
    "denoise-at-noise-level",
    "denoise",
    NoiseLevelDenoiser,
    lambda model, x, sigma: cast(NoiseLevelDenoiser, model).denoise_at(x, sigma),  # sigma (B,), 0..255
    optional=True,
    extras=("sigma",),
)
SUPER_RESOLVE = Task(
    "super-resolve",
    "super-resolve",
    SuperResolver,
    lambda model, x: cast(SuperResolver, model).super_resolve(x),
    input_kind="low-resolution images",
)
RECONSTRUCT = Task("reconstruct", "reconstruct", Reconstructor, lambda model, x: _reconstruct_with_error(model, x))
EMBED = Task("embed", "embed", Embedder, lambda model, x: cast(Embedder, model).embed(x))
VAE_ENCODE = Task("vae-encode", "vae", VariationalCoder, lambda model, x: cast(VariationalCoder, model).encode(x))
VAE_DECODE = Task(
    "vae-decode",
    "vae",
    VariationalCoder,
    lambda model, x: cast(VariationalCoder, model).decode(x),
    input_kind="latents",
)


# The class-conditional VAE: each latent or image travels with its label, a per-item extra (B,).
CONDITIONAL_VAE_DECODE = Task(
    "conditional-vae-decode",
    "conditional-vae",
    ConditionalVariationalCoder,
    lambda model, x, label: cast(ConditionalVariationalCoder, model).decode_given(x, label),
    input_kind="latents",
    extras=("label",),
)
CONDITIONAL_VAE_ENCODE = Task(
    "conditional-vae-encode",
    "conditional-vae",
    ConditionalVariationalCoder,
    lambda model, x, label: cast(ConditionalVariationalCoder, model).encode_given(x, label),
    extras=("label",),
)
CLASSIFY = Task("classify", "classify", Classifier, lambda model, x: cast(Classifier, model).classify(x))

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        DENOISE,
        DENOISE_AT_NOISE_LEVEL,
        SUPER_RESOLVE,
        RECONSTRUCT,
        EMBED,
        VAE_ENCODE,
        VAE_DECODE,
        CONDITIONAL_VAE_DECODE,
        CONDITIONAL_VAE_ENCODE,
        CLASSIFY,
    )
}


def register(task: Task) -> Task:
    """Add a task to the table (its card task becomes one a model card may list)."""
    if task.name in TASKS and TASKS[task.name] != task:
        raise ValueError(f"task {task.name!r} is already in the table")
    TASKS[task.name] = task
    register_card_task(task.card_task)
    return task


def unregister(name: str) -> None:
    """Take a task out of the table again (tests that register a toy task)."""
    task = TASKS.pop(name, None)
    if task is not None and all(other.card_task != task.card_task for other in TASKS.values()):
        unregister_card_task(task.card_task)


def tasks_of_card_task(card_task: str) -> list[Task]:
    """The tasks a card's `card_task` allows (e.g. "vae" -> vae-encode and vae-decode)."""
    return [task for task in TASKS.values() if task.card_task == card_task]


@dataclass(frozen=True)
class ModelTakes:
    """What a model takes, from its card and the protocols its architecture implements."""

    tasks: tuple[Task, ...]  # those of its card's card tasks that its architecture implements
    picture_channels: int | None  # the channels pictures are decoded into; None: the picture's own (L or RGB)
    companion: str | None  # the model of the same tasks for pictures of the other colour mode (card field)
    labels: int | None = None  # a conditional model's classes (labels 0..labels-1), from its card's config

    @property
    def noise_level(self) -> bool:
        """It denoises at a noise level given with each image (DENOISE_AT_NOISE_LEVEL)."""
        return DENOISE_AT_NOISE_LEVEL in self.tasks


def model_takes(card: ModelCard) -> ModelTakes:
    """What the model of `card` takes: the one place this is decided.

    Its tasks are those its card allows whose protocol its architecture names among its bases (as
    docs/architecture.md asks; an unknown architecture: none). Pictures are decoded into the card's
    channels, except for architectures that read 1 or 3 channels alike (`reads_grayscale_and_colour`):
    those get the picture's own."""
    architecture = ARCHITECTURES.get(card.architecture)
    tasks = tuple(
        task
        for card_task in card.tasks
        for task in tasks_of_card_task(card_task)
        if architecture is not None and task.protocol in architecture.__mro__
    )
    own_channels = architecture is not None and architecture.reads_grayscale_and_colour
    classes = card.architecture_config.get("classes", 10)
    labels = int(classes) if CONDITIONAL_VAE_DECODE in tasks and isinstance(classes, int) else None
    return ModelTakes(tasks, None if own_channels else card.input.channels, card.companion, labels)
