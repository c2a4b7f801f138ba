"""The task table: every task the service runs, named once.

A task is one thing a model can be asked to do, run through one batcher per model. Its row says:

- `name`: what the service, its batchers and its metrics call it (`"vae-decode"`);
- `card_task`: the word a model card lists in `tasks` to allow it (`"vae"`; see `models.checkpoint`);
- `default_keys`: the keys of the service's default models (`app.settings.DefaultModels`) whose model
  runs it when a request names none; start-up warms each default model up on the tasks of its key;
- `protocol`: the typed protocol (`models.architectures.protocols`) an architecture implements for it,
  and `call`, which runs that method on a batch;
- `input_kind`: what a batch holds (`images`, `low-resolution images` that come back `scale` times
  larger, `latents`, or `images with a noise-level plane`: each image with one more channel holding its
  noise level, so that a per-request setting travels with its images through the shared batches), from
  which the warm-up input and the expected image size follow.

Adding a task: add a row here (`register`), implement its protocol on an architecture, and add the route
that calls the service with it (docs/architecture.md walks through it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import torch

from models.architectures.base import MNIST_IMAGE_SIZE
from models.architectures.protocols import (
    Denoiser,
    Embedder,
    NoiseLevelDenoiser,
    Reconstructor,
    SuperResolver,
    VariationalCoder,
)

if TYPE_CHECKING:
    from models.checkpoint import ModelCard

InputKind = Literal["images", "low-resolution images", "latents", "images with a noise-level plane"]
TaskOutput = torch.Tensor | tuple[torch.Tensor, ...]
# Input size of a warm-up pass for models that take any size.
ANY_SIZE_WARM_UP = (32, 32)


@dataclass(frozen=True)
class Task:
    name: str
    card_task: str
    default_keys: tuple[str, ...]
    protocol: type
    call: Callable[[Any, torch.Tensor], TaskOutput]  # (model implementing `protocol`, batch) -> outputs
    input_kind: InputKind = "images"
    # A capability some models of the card task have (denoising told the noise level), not a promise of
    # every model that lists the card task: warm-ups run it only on the models that implement it.
    optional: bool = False

    def supported_by(self, model: object) -> bool:
        return isinstance(model, self.protocol)

    def batch_input(self, inputs: torch.Tensor) -> torch.Tensor:
        """What the batcher queues: (n, C, H, W) tensors, so latents (n, D) travel as (n, D, 1, 1)."""
        return inputs.reshape(*inputs.shape, 1, 1) if self.input_kind == "latents" else inputs

    def run(self, model: object, batch: torch.Tensor) -> TaskOutput:
        """Run the model's method for this task on a batch as the batcher queued it."""
        return self.call(model, batch.flatten(1) if self.input_kind == "latents" else batch)

    def warm_up_input(self, card: ModelCard) -> torch.Tensor:
        """A blank input of one item, of the size the model reads: (1, C, H, W) images or (1, D) latents."""
        if self.input_kind == "latents":
            return torch.zeros((1, card.latent_size or 2))
        height, width = expected_input_size(card, self) or ANY_SIZE_WARM_UP
        planes = 1 if self.input_kind == "images with a noise-level plane" else 0
        return torch.zeros((1, card.input.channels + planes, height, width))

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


def with_noise_level(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """(n, C, H, W) images and (n,) noise levels (0..255) -> (n, C + 1, H, W): the batch of
    DENOISE_AT_NOISE_LEVEL, each image with a constant plane of its level."""
    planes = sigma.to(images.dtype).view(-1, 1, 1, 1).expand(images.shape[0], 1, *images.shape[2:])
    return torch.cat([images, planes], dim=1)


def _denoise_at_noise_level(model: NoiseLevelDenoiser, batch: torch.Tensor) -> torch.Tensor:
    """Split the noise-level plane off a batch of `with_noise_level` and denoise at those levels."""
    return model.denoise_at(batch[:, :-1], batch[:, -1].flatten(1).mean(dim=1))


DENOISE = Task("denoise", "denoise", ("denoise",), Denoiser, lambda model, x: cast(Denoiser, model).denoise(x))
# Denoising told the noise level (given by the client or estimated by the service): for the models of
# every noise level (FFDNet). Not a default's task of its own: /v1/denoise uses it when its model has it.
DENOISE_AT_NOISE_LEVEL = Task(
    "denoise-at-noise-level",
    "denoise",
    (),
    NoiseLevelDenoiser,
    lambda model, x: _denoise_at_noise_level(cast(NoiseLevelDenoiser, model), x),
    input_kind="images with a noise-level plane",
    optional=True,
)
SUPER_RESOLVE = Task(
    "super-resolve",
    "super-resolve",
    ("super_resolve",),
    SuperResolver,
    lambda model, x: cast(SuperResolver, model).super_resolve(x),
    input_kind="low-resolution images",
)
RECONSTRUCT = Task(
    "reconstruct", "reconstruct", ("reconstruct",), Reconstructor, lambda model, x: _reconstruct_with_error(model, x)
)
EMBED = Task("embed", "embed", ("embed",), Embedder, lambda model, x: cast(Embedder, model).embed(x))
VAE_ENCODE = Task(
    "vae-encode", "vae", ("vae",), VariationalCoder, lambda model, x: cast(VariationalCoder, model).encode(x)
)
VAE_DECODE = Task(
    "vae-decode",
    "vae",
    ("vae", "manifold"),  # the manifold is drawn by decoding, with its own default (a 2-D latent space)
    VariationalCoder,
    lambda model, x: cast(VariationalCoder, model).decode(x),
    input_kind="latents",
)

TASKS: dict[str, Task] = {
    task.name: task
    for task in (DENOISE, DENOISE_AT_NOISE_LEVEL, SUPER_RESOLVE, RECONSTRUCT, EMBED, VAE_ENCODE, VAE_DECODE)
}


def register(task: Task) -> Task:
    """Add a task to the table (its card task becomes one a model card may list)."""
    if task.name in TASKS and TASKS[task.name] != task:
        raise ValueError(f"task {task.name!r} is already in the table")
    TASKS[task.name] = task
    return task


def unregister(name: str) -> None:
    """Take a task out of the table again (tests that register a toy task)."""
    TASKS.pop(name, None)


def card_tasks() -> tuple[str, ...]:
    """The words a model card may list in `tasks`, in table order."""
    return tuple(dict.fromkeys(task.card_task for task in TASKS.values()))


def tasks_of_card_task(card_task: str) -> list[Task]:
    """The tasks a card's `card_task` allows (e.g. "vae" -> vae-encode and vae-decode)."""
    return [task for task in TASKS.values() if task.card_task == card_task]


def tasks_of_default(key: str) -> list[Task]:
    """The tasks the default model of `key` runs (what start-up warms it up on)."""
    return [task for task in TASKS.values() if key in task.default_keys]
