"""The model registry: which checkpoints exist, which are loaded, and how to run them.

At start-up `ModelRegistry.scan()` reads every `<checkpoints_dir>/<name>/config.json`; `load()`
rebuilds a model (checking its weights' sha256), puts it on the configured device with its execution
plan (models.execution: memory format, precision under the card's quality guard, batch norms folded,
compiled or not; measured on this machine and warmed up for the batch sizes the batcher uses), and
gives it one `Batcher` per task function, all sharing one worker thread per model. A checkpoint that fails
is kept in the listing as *unavailable* with the reason; it never stops the other models.

Every forward pass goes through a batcher: routes call `await registry.run(name, task, inputs)`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from app.batching import Batcher, BatchFunction, BatchingConfig, BatchObserver, BatchOutput
from app.errors import (
    InvalidRequest,
    ModelFailed,
    ModelNotFound,
    ModelOutOfMemory,
    ModelUnavailable,
    NotReady,
    TaskNotSupported,
)
from app.preprocessing import warm_up_input
from app.settings import Settings
from models.checkpoint import (
    CARD_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    ModelCard,
    load_checkpoint,
    read_card,
    sha256_of,
)
from models.execution import (
    ExecutionError,
    PlannedModel,
    Probe,
    describe_hardware,
    native_precisions,
    plan_execution,
)

logger = logging.getLogger("app.registry")

# The functions a model can run, keyed by name; each maps a model card task (or "vae") to a method.
TaskFunction = Literal["denoise", "reconstruct", "embed", "super-resolve", "vae-encode", "vae-decode"]
CARD_TASK_OF: dict[TaskFunction, str] = {
    "denoise": "denoise",
    "reconstruct": "reconstruct",
    "embed": "embed",
    "super-resolve": "super-resolve",
    "vae-encode": "vae",
    "vae-decode": "vae",
}
# Checkpoint folder names: what a model may be called (no separators, no dots first, nothing path-like).
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LoadState = Literal["loaded", "not_loaded", "unavailable"]


def verify_weights(directory: Path, card: ModelCard) -> None:
    """The weights file exists and its sha256 is the one the card promises (CheckpointError if not)."""
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file is missing")
    actual = sha256_of(weights)
    if actual != card.weights_sha256:
        raise CheckpointError(
            f"{weights}: sha256 mismatch (card says {card.weights_sha256 or 'nothing'}, file is {actual})"
        )


def resolve_device(setting: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' and 'cuda:N' must exist."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"AE_DEVICE={setting} but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"AE_DEVICE={setting} but only {torch.cuda.device_count()} CUDA devices exist")
    return device


def check_precision(setting: str, device: torch.device) -> None:
    """A precision named in AE_PRECISION must be one the device runs natively: else a start-up error."""
    if setting != "auto" and setting not in native_precisions(device):
        raise ExecutionError(
            f"AE_PRECISION={setting}: {describe_hardware(device)} does not run {setting} natively "
            f"(it runs {', '.join(native_precisions(device))}); use AE_PRECISION=auto or float32"
        )


# The model method timed when a plan is chosen, per card task (the VAE's: encode and decode).
PROBE_METHOD = {"denoise": "denoise", "super-resolve": "super_resolve", "reconstruct": "reconstruct"}
PROBE_METHOD |= {"embed": "embed", "vae": "reconstruct"}
PROBE_BATCH = 32  # images per timed call for fixed-size models (a typical batch under load)
PROBE_SIDE = 128  # any-size models (photographs): one window of this side


def probe_and_warm_up(card: ModelCard, max_batch_size: int) -> tuple[Probe, list[Probe]]:
    """What a plan is measured on (a typical batch of the card's first task) and warmed up with: a batch of 1
    and a full batch, the sizes a compiled model specialises on (other sizes then share one dynamic graph)."""
    task = card.tasks[0]
    method = PROBE_METHOD[task]
    one = warm_up_input(card, "super-resolve" if task == "super-resolve" else "denoise")  # (1, C, H, W)
    if card.input.any_size:
        probe = Probe(method, torch.rand(1, 1, PROBE_SIDE, PROBE_SIDE, generator=torch.Generator().manual_seed(0)))
        return probe, [Probe(method, one[:, :1])]
    batch = min(PROBE_BATCH, max_batch_size)
    inputs = torch.rand((batch, *one.shape[1:]), generator=torch.Generator().manual_seed(0))
    sizes = sorted({1, 2, max_batch_size})
    return Probe(method, inputs), [Probe(method, one.expand(size, *one.shape[1:]).clone()) for size in sizes]


def task_function(model: Any, task: TaskFunction) -> Callable[[torch.Tensor], BatchOutput]:
    """The model's method for one task (run under its plan by PlannedModel.run)."""
    if task == "denoise":
        return model.denoise
    if task == "reconstruct":
        return _reconstruction_with_error(model)
    if task == "embed":
        return model.embed
    if task == "super-resolve":
        return model.super_resolve
    if task == "vae-encode":
        return model.encode
    if task == "vae-decode":
        # The batcher queues (n, C, H, W) tensors, so latents travel as (n, D, 1, 1).
        return lambda latents: model.decode(latents.flatten(1))
    raise TaskNotSupported(f"unknown task function {task!r}")


def _reconstruction_with_error(model: Any) -> Callable[[torch.Tensor], BatchOutput]:
    def run(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reconstructions = model.reconstruct(images)  # (B, C, H, W)
        errors = (reconstructions.float() - images.float()).pow(2).flatten(1).mean(dim=1)  # (B,) mean squared error
        return reconstructions, errors

    return run


@dataclass
class LoadedModel:
    card: ModelCard
    planned: PlannedModel  # the model with its execution plan applied
    device: torch.device
    executor: concurrent.futures.ThreadPoolExecutor
    batchers: dict[TaskFunction, Batcher] = field(default_factory=dict)


@dataclass
class ModelEntry:
    """One checkpoint folder, whatever its state."""

    name: str
    directory: Path
    card: ModelCard | None = None  # None when config.json itself is broken
    state: LoadState = "not_loaded"
    reason: str | None = None  # why it is unavailable
    loaded: LoadedModel | None = None
    warmed_up: bool = False
    # A thread lock, not an asyncio one: loading runs in worker threads and tests run several event loops.
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelRegistry:
    def __init__(self, settings: Settings, observer: BatchObserver | None = None) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        check_precision(settings.precision, self.device)
        self.observer = observer
        self.batching = BatchingConfig(
            max_batch_size=settings.batch_max_size,
            max_delay_ms=settings.batch_max_delay_ms,
            adaptive_delay=settings.batch_adaptive_delay,
            max_queue_images=settings.batch_max_queue_images,
            timeout_s=settings.batch_timeout_s,
        )
        self.entries: dict[str, ModelEntry] = {}

    # -- discovery and loading -------------------------------------------------------------------

    def scan(self) -> None:
        """Read and validate every model card under the checkpoints directory and check each weights
        file's sha256 against its card; what fails is listed as unavailable with the reason."""
        root = self.settings.checkpoints_dir
        if not root.is_dir():
            logger.warning("checkpoints directory %s does not exist; no models to serve", root)
            return
        for directory in self._checkpoint_folders(root):
            if directory.name in self.entries:
                continue
            entry = ModelEntry(name=directory.name, directory=directory)
            try:
                entry.card = read_card(directory)
                if self.settings.verify_weights:
                    verify_weights(directory, entry.card)
            except CheckpointError as exc:
                self._mark_unavailable(entry, str(exc))
            self.entries[entry.name] = entry

    @staticmethod
    def _checkpoint_folders(root: Path) -> list[Path]:
        """Folders of `root` holding a model card, with sane names, whose real path stays inside `root`
        (a symlink pointing elsewhere is skipped: models come from the checkpoints directory only)."""
        real_root = root.resolve()
        folders = []
        for directory in sorted(root.iterdir()):
            if not directory.is_dir() or not MODEL_NAME_PATTERN.match(directory.name):
                continue
            if not directory.resolve().is_relative_to(real_root) or not (directory / CARD_FILE).is_file():
                continue
            folders.append(directory)
        return folders

    async def rescan(self) -> tuple[list[str], list[str]]:
        """Pick up new checkpoint folders, forget vanished ones that are not loaded, and retry unavailable
        ones that are not loaded (a fixed checkpoint). -> (added, removed) names."""
        before = set(self.entries)
        root = self.settings.checkpoints_dir
        present = {path.name for path in self._checkpoint_folders(root)} if root.is_dir() else set()
        for name, entry in list(self.entries.items()):
            if entry.loaded is None and (name not in present or entry.state == "unavailable"):
                del self.entries[name]
        await asyncio.to_thread(self.scan)  # hashes weights files: off the event loop
        return sorted(set(self.entries) - before), sorted(before - set(self.entries))

    async def unload(self, name: str) -> None:
        """Finish the model's running passes, stop its worker and free it; it loads again on first use."""
        entry = self.entry(name)
        loaded = entry.loaded
        if loaded is None:
            return
        entry.loaded, entry.warmed_up = None, False
        if entry.state == "loaded":
            entry.state = "not_loaded"
        for batcher in loaded.batchers.values():
            await batcher.close()
        loaded.executor.shutdown(wait=True)
        logger.info("unloaded model %s", name)

    def load_sync(self, name: str) -> LoadedModel:
        """Load one model (blocking: reads and hashes the weights). Broken checkpoints become unavailable."""
        entry = self.entry(name)
        with entry.lock:
            return self._load_locked(entry)

    def _load_locked(self, entry: ModelEntry) -> LoadedModel:
        name = entry.name
        if entry.loaded is not None:
            return entry.loaded
        if entry.state == "unavailable":
            raise ModelUnavailable(f"model {name!r} is unavailable: {entry.reason}", param="model")
        try:
            checkpoint = load_checkpoint(entry.directory, device="cpu", verify=self.settings.verify_weights)
        except Exception as exc:  # CheckpointError: this model only is unavailable
            self._mark_unavailable(entry, str(exc))
            raise ModelUnavailable(f"model {name!r} is unavailable: {exc}", param="model") from None
        try:
            probe, warm_up = probe_and_warm_up(checkpoint.card, self.settings.batch_max_size)
            planned = plan_execution(
                checkpoint.model,
                device=self.device,
                precision=self.settings.precision,
                compile=self.settings.compile,
                serving=checkpoint.card.serving,
                probe=probe,
                warm_up=warm_up,
            )
        except Exception as exc:  # choosing the plan runs the model: one that cannot (or is out of GPU memory) is out
            reason = f"warm-up forward pass failed while choosing its execution plan: {exc}"
            self._mark_unavailable(entry, reason)
            raise ModelUnavailable(f"model {name!r} is unavailable: {reason}", param="model") from None
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"model-{name}")
        entry.card = checkpoint.card
        entry.loaded = LoadedModel(checkpoint.card, planned, self.device, executor)
        entry.state = "loaded"
        logger.info("loaded model %s on %s: %s", name, self.device, planned.plan.summary())
        for reason in planned.plan.reasons:
            logger.info("  %s: %s", name, reason)
        return entry.loaded

    async def load(self, name: str) -> LoadedModel:
        """Load on first use, off the event loop, once even when many requests ask at the same time."""
        entry = self.entry(name)
        if entry.loaded is not None:
            return entry.loaded
        return await asyncio.to_thread(self.load_sync, name)

    async def warm_up_model(self, name: str) -> None:
        """One forward pass per task of the model's card, through its batchers (after a management load)."""
        entry = self.entry(name)
        loaded = await self.load(name)
        for card_task in loaded.card.tasks:
            for task in (task for task, of in CARD_TASK_OF.items() if of == card_task):
                if task == "vae-decode":
                    inputs = torch.zeros((1, loaded.card.latent_size or 2, 1, 1))
                else:
                    inputs = warm_up_input(loaded.card, task)
                await self.run(name, task, inputs)
        entry.warmed_up = True

    def preload_names(self) -> list[str]:
        preload = self.settings.preload
        if preload == "all":
            return sorted(self.entries)
        if preload == "none":
            return []
        if preload == "defaults":
            return sorted(set(self.settings.default_models.as_dict().values()) & set(self.entries))
        return list(preload)

    def _mark_unavailable(self, entry: ModelEntry, reason: str) -> None:
        entry.state = "unavailable"
        entry.reason = reason
        logger.error("model %s is unavailable: %s", entry.name, reason)

    # -- lookup ------------------------------------------------------------------------------------

    def entry(self, name: str) -> ModelEntry:
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(sorted(self.entries)) or "none"
            raise ModelNotFound(f"no model named {name!r}; available: {known}", param="model") from None

    def default_for(self, default_key: str) -> str:
        """The configured default model of a task ('super-resolve' and 'super_resolve' both work)."""
        return str(self.settings.default_models.as_dict()[default_key.replace("-", "_")])

    def resolve(self, name: str | None, default_key: str, card_task: str) -> ModelEntry:
        """The entry a request means (its `model`, else the default), checked to do `card_task`."""
        entry = self.entry(name or self.default_for(default_key))
        if entry.card is not None and card_task not in entry.card.tasks:
            raise TaskNotSupported(
                f"model {entry.name!r} does not do {card_task}; it does: {', '.join(entry.card.tasks)}", param="model"
            )
        if entry.state == "unavailable":
            raise ModelUnavailable(f"model {entry.name!r} is unavailable: {entry.reason}", param="model")
        return entry

    def resolve_super_resolution(self, name: str | None, scale: int | None) -> ModelEntry:
        """The super-resolution model a request means. With `model`, that model, whose factor must be `scale`
        when both are given. Without it, the default, unless `scale` asks for another factor: then a servable
        model with that factor, those of the default's domain (MNIST digits, photographs) first, then by name."""
        if name is not None or scale is None:
            entry = self.resolve(name, "super-resolve", "super-resolve")
            if scale is not None and entry.card is not None and entry.card.scale != scale:
                raise InvalidRequest(
                    f"model {entry.name!r} upscales x{entry.card.scale}, not x{scale}; "
                    "leave out scale, or leave out model to have one chosen by its scale",
                    param="scale",
                )
            return entry
        # .get: a default missing from the checkpoints folder need not stop a request that names a scale.
        default_name = self.default_for("super-resolve")
        default = self.entries.get(default_name)
        domain = default.card.input.domain if default is not None and default.card is not None else None
        servable = [
            (entry.name, entry.card)
            for entry in self.entries.values()
            if entry.card is not None and "super-resolve" in entry.card.tasks and entry.state != "unavailable"
        ]
        matching = sorted(
            (model != default_name, card.input.domain != domain, model)
            for model, card in servable
            if card.scale == scale
        )
        if not matching:
            scales = sorted({card.scale for _, card in servable if card.scale})
            raise InvalidRequest(
                f"no super-resolution model upscales x{scale}; available scales: "
                f"{', '.join(f'x{s}' for s in scales) or 'none'}",
                param="scale",
            )
        return self.resolve(matching[0][2], "super-resolve", "super-resolve")

    # -- inference ---------------------------------------------------------------------------------

    async def run(self, name: str, task: TaskFunction, inputs: torch.Tensor) -> BatchOutput:
        """inputs (n, C, H, W) float32 on the CPU -> the task's outputs for them (float32, CPU), batched."""
        loaded = await self.load(name)
        return await self.batcher(loaded, task).submit(inputs)

    def batcher(self, loaded: LoadedModel, task: TaskFunction) -> Batcher:
        if CARD_TASK_OF[task] not in loaded.card.tasks:
            raise TaskNotSupported(f"model {loaded.card.name!r} does not do {CARD_TASK_OF[task]}", param="model")
        batcher = loaded.batchers.get(task)
        if batcher is None:
            batcher = Batcher(
                f"{loaded.card.name}/{task}",
                self._batch_function(loaded, task),
                self.batching,
                executor=loaded.executor,
                observer=self.observer,
            )
            loaded.batchers[task] = batcher
        return batcher

    @staticmethod
    def _batch_function(loaded: LoadedModel, task: TaskFunction) -> BatchFunction:
        planned = loaded.planned
        method = task_function(planned.model, task)

        def run(batch: torch.Tensor) -> BatchOutput:
            try:
                outputs = planned.run(method, batch)  # float32 in and out; the plan applies in between
            except torch.cuda.OutOfMemoryError:
                # Free the cached blocks this pass left behind so the next batches have room.
                if loaded.device.type == "cuda":
                    torch.cuda.empty_cache()
                logger.error("model %s ran out of device memory on a batch of %d", loaded.card.name, len(batch))
                raise ModelOutOfMemory(
                    f"model {loaded.card.name!r} ran out of device memory on a batch of {len(batch)}; retry later"
                ) from None
            except Exception as exc:  # a bug or bad state in the model: only this batch's requests fail
                logger.exception("model %s failed on a batch of %d", loaded.card.name, len(batch))
                raise ModelFailed(f"model {loaded.card.name!r} failed on this request: {type(exc).__name__}") from None
            if isinstance(outputs, tuple):
                return tuple(output.cpu() for output in outputs)
            return outputs.cpu()

        return run

    async def close(self) -> None:
        """Finish running passes, refuse new ones, and stop the worker threads."""
        for entry in self.entries.values():
            if entry.loaded is None:
                continue
            for batcher in entry.loaded.batchers.values():
                await batcher.close()
            entry.loaded.executor.shutdown(wait=True)

    # -- description -------------------------------------------------------------------------------

    def describe(self, entry: ModelEntry) -> dict[str, Any]:
        card = entry.card
        loaded = entry.loaded
        return {
            "name": entry.name,
            "state": entry.state,
            "reason": entry.reason,
            "tasks": card.tasks if card else [],
            "architecture": card.architecture if card else None,
            "input": {
                "channels": card.input.channels,
                "height": card.input.height,
                "width": card.input.width,
                "domain": card.input.domain,
            }
            if card
            else None,
            "latent_size": card.latent_size if card else None,
            "scale": card.scale if card else None,
            "device": str(loaded.device if loaded else self.device),
            "dtype": loaded.planned.plan.precision if loaded else None,
            "execution": loaded.planned.plan.describe() if loaded else None,
            "description": card.description if card else "",
            "sha256": card.weights_sha256 if card else None,
            "metrics": card.metrics if card else {},
            "training": card.training if card else {},
        }


def ready_reasons(registry: ModelRegistry) -> list[str]:
    """Why the service is not ready: a default model that is missing, unavailable or not warmed up."""
    reasons = []
    for task, name in registry.settings.default_models.as_dict().items():
        entry = registry.entries.get(name)
        if entry is None:
            reasons.append(f"default {task} model {name!r} is not in {registry.settings.checkpoints_dir}")
        elif entry.state == "unavailable":
            reasons.append(f"default {task} model {name!r} is unavailable: {entry.reason}")
        elif not entry.warmed_up:
            reasons.append(f"default {task} model {name!r} has not run a warm-up forward pass yet")
    return reasons


def not_ready_error(reasons: list[str]) -> NotReady:
    return NotReady("; ".join(reasons))
