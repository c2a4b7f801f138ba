"""Where models run: the `ModelRuntime` protocol, and `LocalRuntime`, which runs them in this process.

The registry (app.engine.models.registry) keeps the catalogue of checkpoints and hands each model's work to its
runtime: load it, unload it, warm it up, run a batch of a task, and describe where it runs. `LocalRuntime`
loads models here (app.engine.models.loading) and runs them through their batchers; the Ray gateway's runtime
(ae_ray.gateway.RayRuntime) sends the same calls to the model deployments.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from app.engine.models.catalogue import ModelEntry
from app.engine.models.loading import (
    LoadedModel,
    batcher_of,
    batching_config,
    build_loaded_model,
    check_precision,
    resolve_device,
    runnable,
    warm_up_batch,
)
from app.engine.scheduling.batch_items import BatchInput
from app.engine.scheduling.batching import BatchObserver, BatchOutput
from app.errors import ModelUnavailable
from app.settings import Settings
from models.runtime.tasks import Task

logger = logging.getLogger("app.registry")


@dataclass(frozen=True)
class RunningModel:
    """What a runtime says of a model it holds loaded (/v1/models shows it)."""

    device: str
    dtype: str | None
    execution: dict[str, Any] | None
    latent_size: int | None  # the model's own, for cards that do not state it


class ModelRuntime(Protocol):
    """Runs the models of a catalogue's entries. Every method but `describe` may load the model first."""

    device: torch.device  # where this runtime's models run, for those not loaded yet

    async def load(self, entry: ModelEntry) -> None:
        """Make the model ready to run (ModelUnavailable, with the reason, when it cannot be)."""

    async def unload(self, entry: ModelEntry) -> None:
        """Finish its running passes and free it; it loads again on first use."""

    async def warm_up(self, entry: ModelEntry, tasks: list[Task]) -> None:
        """One real forward pass per task; a model that cannot run them becomes unavailable."""

    async def run(self, entry: ModelEntry, task: Task, inputs: BatchInput) -> BatchOutput:
        """inputs (n, C, H, W) images or (n, D) latents, float32 on the CPU, as they are or as `Items` with the
        task's per-item extras (each (n,)) -> the task's outputs (float32, CPU)."""

    def describe(self, entry: ModelEntry) -> RunningModel | None:
        """Where and how the model runs, or None when this runtime does not hold it loaded."""

    async def close(self, entries: list[ModelEntry]) -> None:
        """Finish running passes, refuse new ones, and stop."""


class LocalRuntime:
    """Models loaded in this process, each with its execution plan, worker thread and batchers."""

    def __init__(self, settings: Settings, observer: BatchObserver | None = None) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        check_precision(settings.precision, self.device)
        self.observer = observer
        self.batching = batching_config(settings)

    def load_sync(self, entry: ModelEntry) -> LoadedModel:
        """Load one model (blocking: reads and hashes the weights). Broken checkpoints become unavailable."""
        with entry.lock:
            return self._load_locked(entry)

    def _load_locked(self, entry: ModelEntry) -> LoadedModel:
        name = entry.name
        if entry.loaded is not None:
            return entry.loaded
        if entry.state == "unavailable":
            raise ModelUnavailable(f"model {name!r} is unavailable: {entry.reason}", param="model")
        try:
            loaded = build_loaded_model(entry.name, entry.directory, self.settings, self.device)
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

    async def loaded(self, entry: ModelEntry) -> LoadedModel:
        """Load on first use, off the event loop, once even when many requests ask at the same time."""
        if entry.loaded is not None:
            return entry.loaded
        return await asyncio.to_thread(self.load_sync, entry)

    async def load(self, entry: ModelEntry) -> None:
        await self.loaded(entry)

    async def unload(self, entry: ModelEntry) -> None:
        loaded = entry.loaded
        if loaded is None:
            return
        entry.loaded, entry.warmed_up = None, False
        if entry.state == "loaded":
            entry.state = "not_loaded"
        for batcher in loaded.batchers.values():
            await batcher.close()
        loaded.executor.shutdown(wait=True)
        logger.info("unloaded model %s", entry.name)

    async def warm_up(self, entry: ModelEntry, tasks: list[Task]) -> None:
        loaded = await self.loaded(entry)  # ModelUnavailable, with the reason, when it cannot load
        try:
            for task in runnable(tasks, loaded.card):
                await self.run(entry, task, warm_up_batch(task, loaded.card))
        except Exception as exc:
            entry.mark_unavailable(f"warm-up forward pass failed: {exc}")
            raise
        entry.warmed_up = True

    async def run(self, entry: ModelEntry, task: Task, inputs: BatchInput) -> BatchOutput:
        """Batched with other requests' inputs on the model's batcher for the task."""
        loaded = await self.loaded(entry)
        return await batcher_of(loaded, task, self.batching, self.observer).submit(inputs)

    def describe(self, entry: ModelEntry) -> RunningModel | None:
        loaded = entry.loaded
        if loaded is None:
            return None
        size = getattr(loaded.model, "latent_size", None)
        plan = loaded.planned.plan
        return RunningModel(
            str(loaded.device), plan.precision, plan.describe(), size if isinstance(size, int) else None
        )

    async def close(self, entries: list[ModelEntry]) -> None:
        for entry in entries:
            if entry.loaded is None:
                continue
            for batcher in entry.loaded.batchers.values():
                await batcher.close()
            entry.loaded.executor.shutdown(wait=True)
