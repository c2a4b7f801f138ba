"""The model registry: the catalogue of checkpoints (app.engine.models.catalogue) and the runtime that runs them
(app.engine.models.runtime: in this process, or in Ray Serve's model deployments), behind one object.

Which model a request means is the policy of `app.engine.models.model_choice`; every forward pass goes through
`await registry.run(name, task, inputs)`; `replace()` is the hot swap of app.engine.models.hot_swap.
"""

from __future__ import annotations

import torch

from app.engine.models import hot_swap
from app.engine.models.catalogue import ModelCatalogue, ModelEntry
from app.engine.models.runtime import LocalRuntime, ModelRuntime, RunningModel
from app.engine.scheduling.batch_items import BatchInput
from app.engine.scheduling.batching import BatchObserver, BatchOutput
from app.errors import ReplacementRefused
from app.settings import Settings
from models.runtime.tasks import Task


class ModelRegistry(ModelCatalogue):
    def __init__(
        self, settings: Settings, observer: BatchObserver | None = None, runtime: ModelRuntime | None = None
    ) -> None:
        super().__init__(settings)
        self.runtime: ModelRuntime = runtime or LocalRuntime(settings, observer)
        self.replacing: set[str] = set()  # models whose replacement is being loaded (one at a time)

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    async def load(self, name: str) -> None:
        """Load on first use (off the event loop), once even when many requests ask at the same time."""
        await self.runtime.load(self.entry(name))

    async def unload(self, name: str) -> None:
        """Finish the model's running passes and free it; it loads again on first use."""
        await self.runtime.unload(self.entry(name))

    async def warm_up(self, name: str, tasks: list[Task]) -> None:
        """One real forward pass per task, through the model's batchers; a model that loads but cannot run
        them is as unavailable as a broken file."""
        await self.runtime.warm_up(self.entry(name), tasks)

    async def run(self, name: str, task: Task, inputs: BatchInput) -> BatchOutput:
        """inputs (n, C, H, W) images or (n, D) latents, float32 on the CPU, as they are or as `Items` with the
        task's per-item extras (each (n,): `sigma`) -> the task's outputs for them (float32, CPU), batched with
        other requests'."""
        return await self.runtime.run(self.entry(name), task, inputs)

    def describe(self, entry: ModelEntry) -> RunningModel | None:
        return self.runtime.describe(entry)

    async def replace(self, name: str) -> None:
        """Serve the model from its folder's current card and weights, without failing a request
        (app.engine.models.hot_swap)."""
        entry = self.entry(name)
        if name in self.replacing:
            raise ReplacementRefused(f"model {name!r} is already being replaced", param="name")
        self.replacing.add(name)
        try:
            await hot_swap.replace(self, self.runtime, entry)
        finally:
            self.replacing.discard(name)

    async def close(self) -> None:
        """Finish running passes, refuse new ones, and stop the worker threads."""
        await self.runtime.close(list(self.entries.values()))
