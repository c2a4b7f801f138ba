"""Start-up and shut-down of the model side, the same for every host of the app (`uvicorn app.main:app`,
`ae-serve`, the Ray gateway of `ae_ray`): torch's threads, then the registry scanned, the models to preload
loaded (each with its execution plan, measured and warmed up for the batcher's batch sizes:
models.runtime.execution), one real forward pass through every default model's batchers, the weights of the
others checked. /readyz answers 200 only after that. A broken checkpoint is listed as unavailable and never
stops the others. Nothing here builds an app or knows of HTTP.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch

from app.engine.models.defaults import tasks_of_default
from app.engine.models.model_choice import ModelChoice
from app.engine.models.registry import ModelRegistry
from app.errors import ServiceError
from app.settings import Settings
from models.runtime.machine import available_cpus

logger = logging.getLogger("app.startup")


def torch_threads(settings: Settings) -> int:
    """AE_TORCH_THREADS, else this process's share of the cores it may use (affinity, cgroup quota) among
    AE_WORKERS processes: more threads than cores only fight each other."""
    if settings.torch_threads:
        return settings.torch_threads
    return max(1, available_cpus() // settings.workers)


async def prepare_registry(registry: ModelRegistry, settings: Settings) -> None:
    """Scan the checkpoints, load the models to preload, warm up the default models, and check the weights
    of the others. Each weights file is hashed once: when it loads, or else when it is checked."""
    choice = ModelChoice(registry, settings.default_models)
    registry.scan()
    for name in choice.preload_names(settings.preload):
        try:
            await registry.load(name)
        except ServiceError as exc:  # unknown or broken: listed as such, the others still serve
            logger.error("could not preload %s: %s", name, exc.message)
    await warm_up(registry, choice)  # loads the default models too
    # The weights of the models not loaded by now are checked without loading them (loading checks its own).
    unloaded = [name for name, entry in registry.entries.items() if entry.state != "loaded"]
    await asyncio.to_thread(registry.verify, unloaded)


async def warm_up(registry: ModelRegistry, choice: ModelChoice) -> None:
    """One real forward pass per task of each default model (the tasks of its default key), through its
    batchers; a model that fails it is listed as unavailable and the others still serve."""
    for key, name in choice.defaults.as_dict().items():
        entry = registry.entries.get(name)
        if entry is None or entry.state == "unavailable" or entry.card is None:
            continue
        try:
            await registry.warm_up(name, tasks_of_default(key))
        except Exception as exc:
            logger.error("model %s failed its warm-up: %s", name, exc)


@asynccontextmanager
async def serving(registry: ModelRegistry, settings: Settings) -> AsyncIterator[ModelRegistry]:
    """The registry made ready (torch's threads set, `prepare_registry`), yielded while the app serves, closed
    after: finish running passes, stop the models' threads."""
    torch.set_num_threads(torch_threads(settings))
    started = time.perf_counter()
    await prepare_registry(registry, settings)
    # What start-up built (modules, models, the registry) lives as long as the process. Freezing it
    # takes it out of the garbage collector's sight, so the full collections that requests trigger no
    # longer walk it: those walks paused the event loop for tens of milliseconds, and made the slowest
    # 1% of answers three times slower (docs/benchmarks.md).
    gc.freeze()
    logger.info(
        "service started in %.1f s with %d models on %s, %d torch threads",
        time.perf_counter() - started,
        len(registry.entries),
        registry.device,
        torch.get_num_threads(),
    )
    try:
        yield registry
    finally:
        await registry.close()
