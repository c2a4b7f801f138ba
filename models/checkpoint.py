"""The checkpoint format: the contract between training and serving.

A checkpoint is a folder `<name>/` holding
- `model.safetensors`: the weights (safetensors only: loading them never runs code);
- `config.json`: the model card, everything needed to rebuild, verify and describe the model.

`load_checkpoint` rebuilds the model through the architecture registry, checks the sha256 of the
weights against the card and refuses, with an error naming the file, anything missing or mismatched.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from models.architectures import Architecture, ArchitectureError, build_model

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "config.json"
# What a model (and its checkpoint folder) may be called; the service scans only folders named so.
MODEL_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MODEL_NAME_RULE = "1-64 lowercase letters, digits, '.', '_' and '-', starting with a letter or digit"
# The card's `training` key saying when the run that made the weights ended (ISO 8601, UTC).
FINISHED_AT = "finished_at"
# The words a card may list in `tasks` (card tasks), in the task table's order. The format owns this
# vocabulary; the serving task table (models.runtime.tasks) registers the card tasks of the rows it adds.
_CARD_TASKS: dict[str, None] = dict.fromkeys(
    ("denoise", "super-resolve", "reconstruct", "embed", "vae", "conditional-vae", "classify")
)
_BUILT_IN_CARD_TASKS = frozenset(_CARD_TASKS)


def card_tasks() -> tuple[str, ...]:
    """The words a model card may list in `tasks`."""
    return tuple(_CARD_TASKS)


def register_card_task(word: str) -> None:
    """Let cards list `word` in `tasks` (a task table row of a new card task)."""
    _CARD_TASKS[word] = None


def unregister_card_task(word: str) -> None:
    """Take a card task added by `register_card_task` out again (the built-in ones stay)."""
    if word not in _BUILT_IN_CARD_TASKS:
        _CARD_TASKS.pop(word, None)


def utc_now_iso() -> str:
    """The current time as the cards write it: ISO 8601, UTC, whole seconds (e.g. 2026-11-27T00:53:07+00:00)."""
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


class CheckpointError(Exception):
    """A checkpoint folder cannot be used; the message names the file and the reason."""


@dataclass
class InputSpec:
    channels: int  # 1 grayscale, 3 RGB
    height: int | None = None  # None: any size (fully convolutional models)
    width: int | None = None
    # "mnist" (white digit on black, 28x28 frame), "natural" (photographs) or "user-images" (trained on a
    # folder of one's own images); only "mnist" changes how the service prepares inputs (the MNIST frame).
    domain: str = "mnist"

    @property
    def any_size(self) -> bool:
        return self.height is None or self.width is None


@dataclass
class ModelCard:
    name: str  # folder name and the name clients use
    tasks: list[str]  # what the service may do with it: card tasks (card_tasks(), below)
    architecture: str  # a key of models.architectures.ARCHITECTURES
    architecture_config: dict[str, Any]  # keyword arguments of that architecture's config
    input: InputSpec
    normalization: str = "pixels as float32 in [0, 1]; MNIST digits are white on black"
    scale: int | None = None  # super-resolution factor
    latent_size: int | None = None  # embedding / latent dimensions
    # The model of the same tasks for pictures of the other colour mode (a grayscale and a colour photo
    # denoiser name each other): the service sends each picture to the one of its mode.
    companion: str | None = None
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)  # recipe, data set and licence, duration, device
    metrics: dict[str, Any] = field(default_factory=dict)  # measured by models.evaluate
    # How the service may run it, measured by models.evaluate: {"precision": {"bfloat16": {quality vs float32,
    # speed}}}, the quality guard that models.runtime.execution consults before serving in a reduced precision.
    serving: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str = ""
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not MODEL_NAME_PATTERN.match(self.name):
            raise ValueError(f"invalid model name {self.name!r}: use {MODEL_NAME_RULE}")
        known = card_tasks()
        unknown = sorted(set(self.tasks) - set(known))
        if not self.tasks or unknown:
            raise ValueError(f"tasks must be a non-empty subset of {list(known)}, got {self.tasks}")
        if "super-resolve" in self.tasks and not self.scale:
            raise ValueError("a super-resolve model needs a scale")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def trained_at(self) -> datetime.datetime | None:
        """When training ended (`training.finished_at`), or None when the card does not say or says nonsense."""
        text = self.training.get(FINISHED_AT)
        if not isinstance(text, str):
            return None
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        if not isinstance(data, dict):
            raise ValueError("the model card must be a JSON object")
        if data.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ValueError(
                f"unsupported format_version {data.get('format_version')!r}; this code reads {FORMAT_VERSION}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown model card fields {unknown}")
        values = dict(data)
        if not isinstance(values.get("input"), dict):
            raise ValueError("'input' must be an object with channels, height, width, domain")
        values["input"] = InputSpec(**values["input"])
        return cls(**values)

    def save(self, directory: Path) -> None:
        (directory / CARD_FILE).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")


@dataclass
class Checkpoint:
    card: ModelCard
    model: Architecture
    directory: Path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_weights(weights: Path, card: ModelCard, data: bytes | None = None) -> None:
    """The weights file's sha256 is the one its card promises (CheckpointError if not).

    `data`: the file's bytes when the caller has read them already (they are hashed instead of the file).
    The one place a checkpoint's weights are hashed for checking, at scan or at load, never both.
    """
    actual = hashlib.sha256(data).hexdigest() if data is not None else sha256_of(weights)
    if actual != card.weights_sha256:
        raise CheckpointError(
            f"{weights}: sha256 mismatch (card says {card.weights_sha256 or 'nothing'}, file is {actual})"
        )


def require_weights(directory: Path) -> Path:
    """The checkpoint's weights file (CheckpointError naming it when it is missing)."""
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file is missing")
    return weights


def read_card(directory: Path) -> ModelCard:
    """Read and validate `<directory>/config.json`."""
    path = Path(directory) / CARD_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: model card is missing")
    try:
        card = ModelCard.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path}: invalid model card: {exc}") from exc
    if card.name != Path(directory).name:
        raise CheckpointError(f"{path}: card name {card.name!r} does not match its folder {Path(directory).name!r}")
    return card


def save_checkpoint(model: Architecture, card: ModelCard, directory: Path) -> ModelCard:
    """Write the weights and the card (with the weights' sha256 filled in) into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    card.architecture = model.name
    card.architecture_config = model.config_dict()
    state = {key: tensor.detach().to("cpu").contiguous() for key, tensor in model.state_dict().items()}
    weights = directory / WEIGHTS_FILE
    # One metadata key only: safetensors writes several in hash order, which would make the same weights
    # produce files (and sha256 sums) that differ from run to run.
    safetensors.torch.save_file(state, str(weights), metadata={"architecture": card.architecture})
    card.weights_sha256 = sha256_of(weights)
    card.save(directory)
    # safetensors creates its file readable by its owner only (0600); the service often runs as another
    # account (the container's non-root user), so the weights get the card's permissions (the umask's).
    weights.chmod(stat.S_IMODE((directory / CARD_FILE).stat().st_mode))
    return card


def load_checkpoint(directory: Path, device: str | torch.device = "cpu", verify: bool = True) -> Checkpoint:
    """Rebuild a model from its folder, in eval mode on `device`.

    Raises CheckpointError naming the file for a missing or invalid card, missing or corrupt
    weights, a sha256 mismatch, an unknown architecture or weights that do not fit it.
    """
    directory = Path(directory)
    card = read_card(directory)
    weights = require_weights(directory)
    data = weights.read_bytes()
    if verify:
        verify_weights(weights, card, data)
    try:
        state = safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own error types for truncated/corrupt headers
        raise CheckpointError(f"{weights}: not a readable safetensors file: {exc}") from exc
    try:
        model = build_model(card.architecture, card.architecture_config)
    except ArchitectureError as exc:
        raise CheckpointError(f"{directory / CARD_FILE}: {exc}") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights}: weights do not fit architecture {card.architecture!r}: {exc}") from exc
    model.to(device).eval()
    return Checkpoint(card=card, model=model, directory=directory)


def update_metrics(directory: Path, metrics: dict[str, Any]) -> ModelCard:
    """Merge measured metrics into a checkpoint's card (the weights are untouched)."""
    card = read_card(directory)
    card.metrics.update(metrics)
    card.save(Path(directory))
    return card


def update_serving_precision(directory: Path, precisions: dict[str, Any]) -> ModelCard:
    """Replace the card's quality-guard figures (`serving.precision`) with `precisions` (weights untouched)."""
    card = read_card(directory)
    card.serving["precision"] = precisions
    card.save(Path(directory))
    return card
