"""The model registry: which checkpoints exist, which are loaded, and the batchers that run them.

`scan()` reads every `<checkpoints_dir>/<name>/config.json` (folders named as `models.checkpoint` allows);
`verify()` checks a weights file's sha256 against its card without loading it; `load()` rebuilds a model
(checking the sha256 as it reads the weights), puts it on the configured device with its execution plan
(models.runtime.execution: memory format, precision under the card's quality guard, batch norms folded, compiled
or not; measured on this machine and warmed up for the batch sizes the batcher uses), and gives it one
`Batcher` per task (`models.runtime.tasks`), all sharing one worker thread per model. Each weights file is hashed
once at start-up: those of the models loaded then (preloaded and default ones) as they load, the others by
`verify()`. A checkpoint that fails is
kept in the listing as *unavailable* with the reason; it never stops the other models.

Which model a request means is the policy of `app.engine.model_choice`; every forward pass goes through
`await registry.run(name, task, inputs)`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from app.engine.batching import Batcher, BatchFunction, BatchingConfig, BatchObserver, BatchOutput
from app.errors import (
    ModelFailed,
    ModelNotFound,
    ModelOutOfMemory,
    ModelUnavailable,
    ReplacementRefused,
    TaskNotSupported,
)
from app.settings import Settings
from models.checkpoint import (
    CARD_FILE,
    MODEL_NAME_PATTERN,
    CheckpointError,
    ModelCard,
    load_checkpoint,
    read_card,
    require_weights,
    verify_weights,
)
from models.runtime.execution import (
    ExecutionError,
    PlannedModel,
    Probe,
    describe_hardware,
    native_precisions,
    plan_execution,
)
from models.runtime.tasks import Task, tasks_of_card_task

logger = logging.getLogger("app.registry")
LoadState = Literal["loaded", "not_loaded", "unavailable"]
PROBE_BATCH = 32  # images per timed call when a plan is chosen for a fixed-size model (a typical batch under load)
PROBE_SIDE = 128  # any-size models (photographs): one window of this side


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


def probe_and_warm_up(card: ModelCard, max_batch_size: int) -> tuple[Probe, list[Probe]]:
    """What a plan is measured on (a typical batch of the card's first task) and warmed up with: a batch of 1,
    of 2 and a full one, the sizes a compiled model specialises on (other sizes then share one dynamic graph)."""
    task = tasks_of_card_task(card.tasks[0])[0]
    one = task.batch_input(task.warm_up_input(card))  # (1, C, H, W), or (1, D, 1, 1) latents

    def call(model: torch.nn.Module, batch: torch.Tensor) -> object:
        return task.run(model, batch)

    if card.input.any_size:
        probe_input = torch.rand(1, one.shape[1], PROBE_SIDE, PROBE_SIDE, generator=torch.Generator().manual_seed(0))
        return Probe(call, probe_input), [Probe(call, one)]
    batch = min(PROBE_BATCH, max_batch_size)
    inputs = torch.rand((batch, *one.shape[1:]), generator=torch.Generator().manual_seed(0))
    sizes = sorted({1, 2, max_batch_size})
    return Probe(call, inputs), [Probe(call, one.expand(size, *one.shape[1:]).clone()) for size in sizes]


@dataclass
class LoadedModel:
    card: ModelCard
    planned: PlannedModel  # the model with its execution plan applied
    device: torch.device
    executor: concurrent.futures.ThreadPoolExecutor
    batchers: dict[str, Batcher] = field(default_factory=dict)  # by task name

    @property
    def model(self) -> torch.nn.Module:
        return self.planned.model


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
    verified: bool = False  # its weights' sha256 was checked against its card (by verify() or load())
    # A thread lock, not an asyncio one: loading runs in worker threads and tests run several event loops.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mark_unavailable(self, reason: str) -> None:
        self.state = "unavailable"
        self.reason = reason
        logger.error("model %s is unavailable: %s", self.name, reason)


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
        self.replacing: set[str] = set()  # models whose replacement is being loaded (one at a time)

    # -- discovery -------------------------------------------------------------------------------

    def scan(self) -> list[str]:
        """Read and validate the model card of every new checkpoint folder; a broken card makes its model
        unavailable with the reason. -> the names added. Weights are not read here (see verify)."""
        root = self.settings.checkpoints_dir
        if not root.is_dir():
            logger.warning("checkpoints directory %s does not exist; no models to serve", root)
            return []
        added = []
        for directory in self._checkpoint_folders(root):
            if directory.name in self.entries:
                continue
            entry = ModelEntry(name=directory.name, directory=directory)
            try:
                entry.card = read_card(directory)
            except CheckpointError as exc:
                entry.mark_unavailable(str(exc))
            self.entries[entry.name] = entry
            added.append(entry.name)
        return added

    def verify(self, names: list[str]) -> None:
        """Check each named model's weights against its card's sha256 (blocking: reads the files), unless
        that was done already or is switched off (AE_VERIFY_WEIGHTS); a mismatch makes it unavailable."""
        for name in names:
            entry = self.entry(name)
            if entry.card is None or entry.verified or entry.state == "unavailable":
                continue
            if not self.settings.verify_weights:
                continue
            try:
                verify_weights(require_weights(entry.directory), entry.card)
            except CheckpointError as exc:
                entry.mark_unavailable(str(exc))
                continue
            entry.verified = True

    @staticmethod
    def _checkpoint_folders(root: Path) -> list[Path]:
        """Folders of `root` holding a model card, named as models may be named (models.checkpoint), whose
        real path stays inside `root` (a symlink pointing elsewhere is skipped: models come from the
        checkpoints directory only)."""
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
        await asyncio.to_thread(lambda: self.verify(self.scan()))  # hashes weights files: off the event loop
        return sorted(set(self.entries) - before), sorted(before - set(self.entries))

    def entry(self, name: str) -> ModelEntry:
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(sorted(self.entries)) or "none"
            raise ModelNotFound(f"no model named {name!r}; available: {known}", param="model") from None

    # -- loading ---------------------------------------------------------------------------------

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
            loaded = self._build(entry)
        except Exception as exc:  # CheckpointError, a plan that cannot run, out of GPU memory: this model only
            entry.mark_unavailable(str(exc))
            raise ModelUnavailable(f"model {name!r} is unavailable: {exc}", param="model") from None
        entry.card, entry.verified = loaded.card, True
        entry.loaded = loaded
        planned = loaded.planned
        entry.state = "loaded"
        logger.info("loaded model %s on %s: %s", name, self.device, planned.plan.summary())
        for reason in planned.plan.reasons:
            logger.info("  %s: %s", name, reason)
        return entry.loaded

    def _build(self, entry: ModelEntry) -> LoadedModel:
        """The model of the folder's current card and weights with its execution plan applied
        (models.runtime.execution), on the device, with its own worker thread (blocking: reads and hashes the
        weights, measures the plan).
        Raises CheckpointError, or a RuntimeError naming the plan's warm-up that failed."""
        checkpoint = load_checkpoint(entry.directory, device="cpu", verify=self.settings.verify_weights)
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
        except Exception as exc:  # choosing the plan runs the model: one that cannot is out
            raise RuntimeError(f"warm-up forward pass failed while choosing its execution plan: {exc}") from exc
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"model-{entry.name}")
        return LoadedModel(checkpoint.card, planned, self.device, executor)

    async def load(self, name: str) -> LoadedModel:
        """Load on first use, off the event loop, once even when many requests ask at the same time."""
        entry = self.entry(name)
        if entry.loaded is not None:
            return entry.loaded
        return await asyncio.to_thread(self.load_sync, name)

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

    async def warm_up(self, name: str, tasks: list[Task]) -> None:
        """One real forward pass per task, through the model's batchers; a model that loads but cannot run
        them is as unavailable as a broken file."""
        entry = self.entry(name)
        loaded = await self.load(name)  # ModelUnavailable, with the reason, when it cannot load
        try:
            for task in tasks:
                if task.optional and not task.supported_by(loaded.model):
                    continue
                await self.run(name, task, task.warm_up_input(loaded.card))
        except Exception as exc:
            entry.mark_unavailable(f"warm-up forward pass failed: {exc}")
            raise
        entry.warmed_up = True

    # -- replacing ---------------------------------------------------------------------------------

    async def replace(self, name: str) -> None:
        """Serve the model from its folder's current card and weights, without failing a request.

        A loaded model is swapped only once the new one is built, checked and warmed up; requests
        already queued for the old one are served by it, then it is freed. The new checkpoint is refused
        (ReplacementRefused, 409) and the old one keeps serving when it is broken (sha256, format,
        architecture), fails its warm-up, or would change what requests may send (tasks, input,
        scale, latent size: a request prepared for the old model must run on the new one). A model
        that is not loaded has its card re-read and checked, to be loaded on first use."""
        entry = self.entry(name)
        if name in self.replacing:
            raise ReplacementRefused(f"model {name!r} is already being replaced", param="name")
        self.replacing.add(name)
        try:
            if entry.loaded is None:
                await asyncio.to_thread(self._refresh_card, entry)
                return
            await self._swap(entry, entry.loaded)
        finally:
            self.replacing.discard(name)

    def _refresh_card(self, entry: ModelEntry) -> None:
        try:
            card = read_card(entry.directory)
            if self.settings.verify_weights:
                verify_weights(require_weights(entry.directory), card)
        except CheckpointError as exc:
            serving = entry.card.weights_sha256 if entry.card is not None else "nothing"
            raise ReplacementRefused(f"model {entry.name!r} keeps its checkpoint ({serving}): {exc}") from None
        entry.card, entry.reason, entry.verified = card, None, self.settings.verify_weights
        if entry.state == "unavailable":  # a fixed checkpoint
            entry.state = "not_loaded"

    async def _swap(self, entry: ModelEntry, old: LoadedModel) -> None:
        refused = f"model {entry.name!r} keeps serving the weights with sha256 {old.card.weights_sha256}"
        try:
            new = await asyncio.to_thread(self._build, entry)
        except Exception as exc:
            raise ReplacementRefused(f"{refused}: the new checkpoint is refused: {exc}") from None
        try:
            changed = interface_changes(old.card, new.card)
            if changed:
                raise ReplacementRefused(
                    f"{refused}: the new checkpoint changes {', '.join(changed)}; serve it under a new name"
                )
            for task in warm_up_tasks(new.card):
                if task.optional and not task.supported_by(new.model):
                    continue
                await self.batcher(new, task).submit(task.batch_input(task.warm_up_input(new.card)))
        except ReplacementRefused:
            await self._free(new)
            raise
        except Exception as exc:
            await self._free(new)
            raise ReplacementRefused(f"{refused}: the new model failed its warm-up pass: {exc}") from None
        if entry.loaded is not old:  # unloaded meanwhile: the new model is not wanted
            await self._free(new)
            raise ReplacementRefused(f"model {entry.name!r} was unloaded while its replacement was being loaded")
        # One step on the event loop: a request takes entry.loaded's batcher and queues its images without
        # yielding in between (run() below), so none reaches the old batchers after this line.
        entry.loaded, entry.card, entry.verified, entry.warmed_up = new, new.card, True, True
        logger.info(
            "model %s now serves weights %s (was %s)", entry.name, new.card.weights_sha256, old.card.weights_sha256
        )
        await self._free(old, finish_queued=True)

    @staticmethod
    async def _free(loaded: LoadedModel, finish_queued: bool = False) -> None:
        """Stop a model's batchers (after the requests queued for them, with `finish_queued`) and its thread."""
        for batcher in loaded.batchers.values():
            await (batcher.finish() if finish_queued else batcher.close())
        await asyncio.to_thread(loaded.executor.shutdown, wait=True)

    # -- inference -------------------------------------------------------------------------------

    async def run(self, name: str, task: Task, inputs: torch.Tensor) -> BatchOutput:
        """inputs (n, C, H, W) images or (n, D) latents, float32 on the CPU -> the task's outputs for them
        (float32, CPU), batched with other requests'."""
        loaded = await self.load(name)
        return await self.batcher(loaded, task).submit(task.batch_input(inputs))

    def batcher(self, loaded: LoadedModel, task: Task) -> Batcher:
        if task.card_task not in loaded.card.tasks:
            raise TaskNotSupported(f"model {loaded.card.name!r} does not do {task.card_task}", param="model")
        batcher = loaded.batchers.get(task.name)
        if batcher is None:
            batcher = Batcher(
                f"{loaded.card.name}/{task.name}",
                self._batch_function(loaded, task),
                self.batching,
                executor=loaded.executor,
                observer=self.observer,
            )
            loaded.batchers[task.name] = batcher
        return batcher

    @staticmethod
    def _batch_function(loaded: LoadedModel, task: Task) -> BatchFunction:
        if not task.supported_by(loaded.model):
            raise TaskNotSupported(
                f"model {loaded.card.name!r} ({loaded.card.architecture}) cannot {task.name}: its architecture "
                f"does not implement {task.protocol.__name__}",
                param="model",
            )

        planned = loaded.planned

        def run(batch: torch.Tensor) -> BatchOutput:
            try:
                # float32 in and out; the plan (memory format, precision) applies in between
                outputs = planned.run(lambda inputs: task.run(planned.model, inputs), batch)
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


def warm_up_tasks(card: ModelCard) -> list[Task]:
    """The tasks a warm-up runs for a model: one forward pass for each task its card lists (optional tasks
    only where the model implements them)."""
    return [task for card_task in card.tasks for task in tasks_of_card_task(card_task)]


def interface_changes(old: ModelCard, new: ModelCard) -> list[str]:
    """What requests see of a model that differs between two cards (empty: one may replace the other)."""
    changes = []
    if sorted(old.tasks) != sorted(new.tasks):
        changes.append(f"its tasks ({', '.join(old.tasks)} -> {', '.join(new.tasks)})")
    if old.input != new.input:
        changes.append("its input (channels, size or domain)")
    if old.scale != new.scale:
        changes.append(f"its scale (x{old.scale} -> x{new.scale})")
    if old.latent_size != new.latent_size:
        changes.append(f"its latent size ({old.latent_size} -> {new.latent_size})")
    return changes
