"""The Open Inference Protocol's models: one per served model and task, named `{model}.{task}`.

What the protocol calls a model is one thing one checkpoint does, with named, typed tensors in and out:

- `embed`: IMAGE UINT8 [-1, H, W, C] -> EMBEDDING FP32 [-1, D]
- `reconstruct`: IMAGE -> IMAGE, RECONSTRUCTION_ERROR FP32 [-1]
- `denoise`: IMAGE -> IMAGE; models of every noise level also take SIGMA FP32 [-1] (optional: estimated when
  absent; one level for all images or one per image) and answer NOISE_SIGMA FP32 [-1], the level used
- `super-resolve`: IMAGE -> IMAGE UINT8 [-1, H*s, W*s, C]
- `encode`: IMAGE -> MEAN, LOG_VARIANCE FP32 [-1, D]
- `decode`: LATENT FP32 [-1, D] -> IMAGE
- `sample`: N INT32 [1], SEED INT64 [1] and TEMPERATURE FP32 [1] (both optional) -> IMAGE, SEED INT64 [1]
- conditional VAEs (card task `conditional-vae`): `decode` takes LABEL INT32 [-1] with LATENT (one label for
  all or one per latent) and `sample` an optional LABEL (left out: drawn from the seed); both answer LABEL too

Images are (batch, height, width, channels) of 0..255, as PNG holds them. H, W and C are the model's own where
it reads one size (MNIST models: 28 x 28 x 1; MNIST super-resolution: its low-resolution size), and -1 where it
takes any: models of photographs take any size, and those that read grayscale and colour alike take C = 1 or 3.
A picture is never brought into the MNIST frame here (the REST routes' `preprocess=auto`): a tensor has the
shape the metadata states, or is refused naming it.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.engine.models.registry import ModelEntry, ModelRegistry
from app.errors import ModelNotFound
from models.checkpoint import ModelCard
from models.runtime.tasks import (
    CONDITIONAL_VAE_DECODE,
    CONDITIONAL_VAE_ENCODE,
    DENOISE,
    EMBED,
    RECONSTRUCT,
    SUPER_RESOLVE,
    VAE_ENCODE,
    Task,
    expected_input_size,
    model_takes,
)

ANY = -1  # a dimension of any size, as the protocol writes it
VERSION = "1"  # each model has one version: the checkpoint the registry serves now
PLATFORM = "pytorch"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]
    optional: bool = False


@dataclass(frozen=True)
class ProtocolModel:
    name: str  # `{model}.{task}`
    model: str  # the checkpoint (the registry's name)
    task: str  # embed, reconstruct, denoise, super-resolve, encode, decode or sample
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.outputs if spec.name == name), None)


def protocol_models(registry: ModelRegistry) -> dict[str, ProtocolModel]:
    """Every protocol model of the registry's models that have a card (broken checkpoints have none)."""
    found: dict[str, ProtocolModel] = {}
    for entry in registry.entries.values():
        for model in models_of(entry):
            found[model.name] = model
    return found


def find(registry: ModelRegistry, name: str, version: str = "") -> ProtocolModel:
    """The protocol model `name` (and `version`, when given), or ModelNotFound (404 / NOT_FOUND)."""
    checkpoint, _, task = name.rpartition(".")
    entry = registry.entries.get(checkpoint)
    model = next((m for m in models_of(entry) if m.task == task), None) if entry is not None else None
    if model is None:
        raise ModelNotFound(
            f"no model {name!r}; models are named {{model}}.{{task}}, e.g. mnist-ae.embed (GET /v1/models lists "
            "the served models and their tasks)",
            param="model_name",
        )
    if version not in ("", VERSION):
        raise ModelNotFound(f"model {name!r} has no version {version!r}; its one version is {VERSION}", param="version")
    return model


def is_ready(entry: ModelEntry | None) -> bool:
    """Ready for inference: known, with a card, and not broken (a model not loaded yet loads on first use)."""
    return entry is not None and entry.card is not None and entry.state != "unavailable"


def models_of(entry: ModelEntry) -> list[ProtocolModel]:
    card = entry.card
    if card is None:
        return []
    made: list[ProtocolModel] = []
    for card_task in card.tasks:
        for task, inputs, outputs in tensors_of(card, card_task):
            made.append(ProtocolModel(f"{card.name}.{task}", card.name, task, inputs, outputs))
    return made


def takes_noise_level(card: ModelCard) -> bool:
    return model_takes(card).noise_level


def image_spec(card: ModelCard, task: Task, name: str = "IMAGE", scale: int = 1) -> TensorSpec:
    """IMAGE UINT8 [-1, H, W, C] of what the model reads for `task`, or of its answer (`scale` x larger)."""
    size = expected_input_size(card, task)
    height, width = (size[0] * scale, size[1] * scale) if size else (ANY, ANY)
    # Models that read both, and the photo denoisers (a grayscale picture goes to the grayscale one of the pair),
    # take the picture's own channels.
    own_channels = model_takes(card).picture_channels is None or takes_noise_level(card)
    return TensorSpec(name, "UINT8", (ANY, height, width, ANY if own_channels else card.input.channels))


def tensors_of(card: ModelCard, card_task: str) -> list[tuple[str, tuple[TensorSpec, ...], tuple[TensorSpec, ...]]]:
    """(protocol task, inputs, outputs) for one card task of the task table (models.runtime.tasks)."""
    dimensions = card.latent_size or ANY
    if card_task == EMBED.card_task:
        return [("embed", (image_spec(card, EMBED),), (TensorSpec("EMBEDDING", "FP32", (ANY, dimensions)),))]
    if card_task == RECONSTRUCT.card_task:
        image = image_spec(card, RECONSTRUCT)
        error = TensorSpec("RECONSTRUCTION_ERROR", "FP32", (ANY,))
        return [("reconstruct", (image,), (image, error))]
    if card_task == DENOISE.card_task:
        image = image_spec(card, DENOISE)
        if not takes_noise_level(card):
            return [("denoise", (image,), (image,))]
        sigma_in = TensorSpec("SIGMA", "FP32", (ANY,), optional=True)
        return [("denoise", (image, sigma_in), (image, TensorSpec("NOISE_SIGMA", "FP32", (ANY,))))]
    if card_task == SUPER_RESOLVE.card_task:
        scale = card.scale or 1
        return [("super-resolve", (image_spec(card, SUPER_RESOLVE),), (image_spec(card, SUPER_RESOLVE, scale=scale),))]
    if card_task == VAE_ENCODE.card_task:
        image = image_spec(card, VAE_ENCODE)
        latent = TensorSpec("LATENT", "FP32", (ANY, dimensions))
        seed = TensorSpec("SEED", "INT64", (1,), optional=True)
        sample_inputs = (
            TensorSpec("N", "INT32", (1,)),
            seed,
            TensorSpec("TEMPERATURE", "FP32", (1,), optional=True),
        )
        moments = (TensorSpec("MEAN", "FP32", (ANY, dimensions)), TensorSpec("LOG_VARIANCE", "FP32", (ANY, dimensions)))
        return [
            ("encode", (image,), moments),
            ("decode", (latent,), (image,)),
            ("sample", sample_inputs, (image, TensorSpec("SEED", "INT64", (1,)))),
        ]
    if card_task == CONDITIONAL_VAE_DECODE.card_task:
        image = image_spec(card, CONDITIONAL_VAE_ENCODE)
        labels = TensorSpec("LABEL", "INT32", (ANY,))
        labelled_sample_inputs = (
            TensorSpec("N", "INT32", (1,)),
            TensorSpec("SEED", "INT64", (1,), optional=True),
            TensorSpec("TEMPERATURE", "FP32", (1,), optional=True),
            TensorSpec("LABEL", "INT32", (ANY,), optional=True),
        )
        return [
            ("decode", (TensorSpec("LATENT", "FP32", (ANY, dimensions)), labels), (image, labels)),
            ("sample", labelled_sample_inputs, (image, TensorSpec("SEED", "INT64", (1,)), labels)),
        ]
    return []  # a card task added to the table later has no protocol model until it is mapped here
