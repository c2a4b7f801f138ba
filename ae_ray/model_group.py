"""`ModelGroup`: the Ray Serve deployment that runs the forward passes of a group of checkpoints.

A replica is the plain service's model layer without its HTTP: the project's `ModelRegistry` (cards read and
sha256-checked, safetensors only, one worker thread per model) for the checkpoints of its group. Requests
name their checkpoint as Serve's *multiplexed model id*: Serve routes a request to a replica that already has
that checkpoint loaded when there is one, and each replica keeps at most `models_per_replica` checkpoints
loaded, dropping the least recently used (`@serve.multiplexed`).

Batching inside a replica is `@serve.batch` counting images (`batching="serve"`, the default) or the project's
`Batcher` (`batching="project"`); docs/scaling.md measures both and says why the default is the default.

Tensors cross between actors as numpy arrays (Ray moves those without pickling their buffers); errors are
the service's own (`app.errors`), pickled with their status, type and headers, so the gateway answers them
as the plain service would.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ray import serve

from ae_ray.options import RayServeOptions
from app.engine.models.loading import LoadedModel, batch_function
from app.engine.models.registry import ModelRegistry
from app.engine.scheduling.batch_items import queued
from app.errors import TaskNotSupported
from app.settings import settings_from_environment
from models.runtime.tasks import TASKS, Task, tasks_of_card_task

logger = logging.getLogger("ae_ray.model_group")
Arrays = tuple[np.ndarray, ...]


@dataclass
class BatchItem:
    """One request's share of a `@serve.batch` call."""

    model: str
    task: Task
    inputs: torch.Tensor  # (n, C, H, W) images or (n, D) latents
    extras: dict[str, torch.Tensor]  # the task's per-item extras, each (n,)


def images_in(items: list[BatchItem]) -> int:
    """`@serve.batch` counts images, not requests, against max_batch_size (AE_BATCH_MAX_SIZE)."""
    return sum(item.inputs.shape[0] for item in items)


class ReplicaModel:
    """What the multiplexing LRU holds for one checkpoint; evicting it unloads the model from the registry."""

    def __init__(self, registry: ModelRegistry, loaded: LoadedModel, loop: asyncio.AbstractEventLoop) -> None:
        self.registry = registry
        self.loaded = loaded
        self.name = loaded.card.name
        self._loop = loop
        self._released = False

    async def release(self) -> None:
        """Unload the checkpoint, unless the registry already holds a newer load of it."""
        entry = self.registry.entries.get(self.name)
        if entry is not None and entry.loaded is self.loaded:
            await self.registry.unload(self.name)

    def __del__(self) -> None:
        # Serve calls this when the LRU evicts the model (in a worker thread); Python calls it again when
        # the object is collected. Only the first call unloads, on the replica's event loop.
        if self._released:
            return
        self._released = True
        if self._loop.is_closed():
            return
        try:
            on_the_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:  # no loop in this thread: Serve's executor thread
            on_the_loop = False
        if on_the_loop:
            self._loop.create_task(self.release())
            return
        try:
            asyncio.run_coroutine_threadsafe(self.release(), self._loop).result(timeout=60)
        except Exception:  # the replica is going away; nothing to hand the error to
            logger.exception("unloading %s failed", self.name)


class ModelGroup:
    """The forward passes of one group of checkpoints (see the module docstring).

    Its constructor is a coroutine, which Serve awaits (Python itself would not): it hashes the weights
    files and runs warm-up passes without blocking the replica's event loop.
    """

    async def __init__(self, group: str, options: dict[str, Any], warm: list[str]) -> None:  # type: ignore[misc]
        self.group = group
        self.options = RayServeOptions(**options)
        self.settings = (
            settings_from_environment()
        )  # AE_* of this replica's environment (the Serve config's runtime_env)
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        self.registry = ModelRegistry(self.settings)
        await asyncio.to_thread(self.registry.scan)  # hashes the weights files: off the event loop

        # Serve keeps the LRU and the batch queue on the decorated function object, so these decorate
        # closures made here (a bound method cannot carry attributes), sized by this replica's settings.
        async def open_model(name: str) -> ReplicaModel:
            return await self._open(name)

        async def run_batch(items: list[BatchItem]) -> list[Arrays]:
            return await self._run_batch(items)

        self.model = serve.multiplexed(max_num_models_per_replica=self.options.models_per_replica)(open_model)
        self.batched = serve.batch(
            max_batch_size=self.settings.batch_max_size,
            batch_wait_timeout_s=self.settings.batch_max_delay_ms / 1000,
            batch_size_fn=images_in,
        )(run_batch)
        # The group's default models load and run a pass before the replica counts as started, so a replica
        # that the autoscaler adds answers its first request warm, like a fresh `ae-serve` after /readyz.
        # Through the LRU, and no more than it holds, so that it accounts for them.
        members = [name for name in warm if self.options.group_of(name) == group and name in self.registry.entries]
        for name in members[: self.options.models_per_replica]:
            await self.model(name)
        logger.info("model group %s ready with %d checkpoints known", group, len(self.registry.entries))

    async def _open(self, name: str) -> ReplicaModel:
        """Load one checkpoint and run its warm-up passes (the multiplexing LRU calls this on a miss)."""
        if name not in self.registry.entries:  # added after this replica started (the gateway rescanned)
            await self.registry.rescan()
        self._check_member(name)
        entry = self.registry.entry(name)
        if entry.card is None:
            await self.registry.load(name)  # ModelUnavailable for a broken checkpoint
        assert entry.card is not None
        tasks = [task for card_task in entry.card.tasks for task in tasks_of_card_task(card_task)]
        await self.registry.warm_up(name, tasks)  # a model that cannot run its card's tasks is unavailable
        loaded = entry.loaded
        assert loaded is not None
        return ReplicaModel(self.registry, loaded, asyncio.get_running_loop())

    def _check_member(self, name: str) -> None:
        self.registry.entry(name)  # ModelNotFound when this replica's scan did not find it
        if self.options.group_of(name) != self.group:
            raise ValueError(f"model {name!r} belongs to group {self.options.group_of(name)!r}, not {self.group!r}")

    async def loaded_models(self) -> list[str]:
        """Load the request's checkpoint (multiplexed model id) here; -> the checkpoints this replica then holds
        loaded (at most models_per_replica: the LRU unloads the others)."""
        await self.model(serve.get_multiplexed_model_id())
        return sorted(name for name, entry in self.registry.entries.items() if entry.loaded is not None)

    async def load(self) -> None:
        """Load the request's checkpoint here (multiplexed model id)."""
        await self.model(serve.get_multiplexed_model_id())

    async def run(self, task_name: str, inputs: np.ndarray, extras: dict[str, np.ndarray] | None = None) -> Arrays:
        """inputs ((n, C, H, W) images or (n, D) latents, float32) and the task's per-item extras (each (n,))
        -> the task's outputs for them, batched with other requests."""
        name = serve.get_multiplexed_model_id()
        task = TASKS[task_name]
        await self.model(name)
        tensors = {key: writable_tensor(extra) for key, extra in (extras or {}).items()}
        if self.options.batching == "serve":
            return await self.batched(BatchItem(name, task, writable_tensor(inputs), tensors))
        outputs = await self.registry.run(name, task, queued(writable_tensor(inputs), tensors))
        return _arrays(outputs)

    async def _run_batch(self, items: list[BatchItem]) -> list[Arrays]:
        """`@serve.batch`: the requests Serve gathered, grouped by (model, task, shape), one pass per group."""
        groups: dict[tuple[str, str, tuple[int, ...]], list[int]] = defaultdict(list)
        for index, item in enumerate(items):
            groups[(item.model, item.task.name, tuple(item.inputs.shape[1:]))].append(index)
        results: list[Arrays] = [()] * len(items)
        loop = asyncio.get_running_loop()
        for (name, _, _), indices in groups.items():
            task = items[indices[0]].task
            loaded = (await self.model(name)).loaded
            if task.card_task not in loaded.card.tasks:
                raise TaskNotSupported(f"model {name!r} does not do {task.card_task}", param="model")
            batch = queued(
                torch.cat([items[i].inputs for i in indices]),
                {key: torch.cat([items[i].extras[key] for i in indices]) for key in task.extras},
            )
            function = batch_function(loaded, task)
            outputs = _arrays(await loop.run_in_executor(loaded.executor, function, batch))
            start = 0
            for index in indices:
                stop = start + items[index].inputs.shape[0]
                results[index] = tuple(output[start:stop] for output in outputs)
                start = stop
        return results

    async def __del__(self) -> None:
        # Replica shutdown: finish the running passes and stop the worker threads.
        await self.registry.close()


def writable_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor of an array that may come read-only out of Ray's object store (copied only then)."""
    return torch.from_numpy(np.require(array, requirements="W"))


def _arrays(outputs: torch.Tensor | tuple[torch.Tensor, ...]) -> Arrays:
    return tuple(output.numpy() for output in (outputs if isinstance(outputs, tuple) else (outputs,)))
