"""Loading one model: its checkpoint rebuilt, its execution plan applied, its worker thread, its batchers.

`build_loaded_model` rebuilds a model (checking the sha256 as it reads the weights), puts it on the configured
device with its execution plan (models.runtime.execution: memory format, precision under the card's quality
guard, batch norms folded, compiled or not; measured on this machine and warmed up for the batch sizes the
batcher uses) and gives it one worker thread; `new_batcher` makes its `Batcher` for a task
(`models.runtime.tasks`), all sharing that thread. What the local runtime (app.engine.models.runtime) and a Ray
model replica (ae_ray.model_group) share.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from app.engine.scheduling.batch_items import BatchInput, Items, queued
from app.engine.scheduling.batching import (
    Batcher,
    BatchFunction,
    BatchingConfig,
    BatchObserver,
    BatchOutput,
    ThreadPasses,
)
from app.errors import ModelFailed, ModelOutOfMemory, TaskNotSupported
from app.settings import Settings
from models.checkpoint import ModelCard, load_checkpoint
from models.runtime.execution import (
    ExecutionError,
    PlannedModel,
    Probe,
    plan_execution,
)
from models.runtime.machine import describe_hardware, native_precisions
from models.runtime.tasks import Task, model_takes, tasks_of_card_task

logger = logging.getLogger("app.registry")
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


def batching_config(settings: Settings) -> BatchingConfig:
    return BatchingConfig(
        max_batch_size=settings.batch_max_size,
        max_delay_ms=settings.batch_max_delay_ms,
        adaptive_delay=settings.batch_adaptive_delay,
        max_queue_images=settings.batch_max_queue_images,
        timeout_s=settings.batch_timeout_s,
        inline_max_ms=settings.batch_inline_max_ms,
    )


def probe_and_warm_up(card: ModelCard, max_batch_size: int) -> tuple[Probe, list[Probe]]:
    """What a plan is measured on (a typical batch of the card's first task) and warmed up with: a batch of 1,
    of 2 and a full one, the sizes a compiled model specialises on (other sizes then share one dynamic graph)."""
    task = tasks_of_card_task(card.tasks[0])[0]
    one = task.warm_up_input(card)  # (1, C, H, W), or (1, D) latents

    def call(model: torch.nn.Module, batch: torch.Tensor) -> object:
        return task.run(model, batch, task.warm_up_extras(batch.shape[0]))

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
    passes: ThreadPasses = field(default_factory=ThreadPasses)  # on the executor, shared by the batchers

    @property
    def model(self) -> torch.nn.Module:
        return self.planned.model


def build_loaded_model(name: str, directory: Path, settings: Settings, device: torch.device) -> LoadedModel:
    """The model of the folder's current card and weights with its execution plan applied
    (models.runtime.execution), on the device, with its own worker thread (blocking: reads and hashes the
    weights, measures the plan).
    Raises CheckpointError, or a RuntimeError naming the plan's warm-up that failed."""
    checkpoint = load_checkpoint(directory, device="cpu", verify=settings.verify_weights)
    try:
        probe, warm_up = probe_and_warm_up(checkpoint.card, settings.batch_max_size)
        planned = plan_execution(
            checkpoint.model,
            device=device,
            precision=settings.precision,
            compile=settings.compile,
            serving=checkpoint.card.serving,
            probe=probe,
            warm_up=warm_up,
        )
    except Exception as exc:  # choosing the plan runs the model: one that cannot is out
        raise RuntimeError(f"warm-up forward pass failed while choosing its execution plan: {exc}") from exc
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"model-{name}")
    return LoadedModel(checkpoint.card, planned, device, executor)


def batcher_of(
    loaded: LoadedModel, task: Task, batching: BatchingConfig, observer: BatchObserver | None = None
) -> Batcher:
    """The model's batcher for `task`, made on first use; a task its card does not list is refused."""
    if task.card_task not in loaded.card.tasks:
        raise TaskNotSupported(f"model {loaded.card.name!r} does not do {task.card_task}", param="model")
    batcher = loaded.batchers.get(task.name)
    if batcher is None:
        batcher = Batcher(
            f"{loaded.card.name}/{task.name}",
            batch_function(loaded, task),
            batching,
            executor=loaded.executor,
            observer=observer,
            passes=loaded.passes,
        )
        loaded.batchers[task.name] = batcher
    return batcher


def batch_function(loaded: LoadedModel, task: Task) -> BatchFunction:
    """The synchronous pass a batcher runs on the model's thread: a batch as queued -> the task's outputs."""
    if task not in model_takes(loaded.card).tasks:
        raise TaskNotSupported(
            f"model {loaded.card.name!r} ({loaded.card.architecture}) cannot {task.name}: its architecture "
            f"does not implement {task.protocol.__name__}",
            param="model",
        )

    planned = loaded.planned

    def run(batch: BatchInput) -> BatchOutput:
        inputs, extras = (batch.inputs, batch.extras) if isinstance(batch, Items) else (batch, {})
        try:
            on_device = {name: extra.to(planned.device) for name, extra in extras.items()}
            # float32 in and out; the plan (memory format, precision) applies in between
            outputs = planned.run(lambda prepared: task.run(planned.model, prepared, on_device), inputs)
        except torch.cuda.OutOfMemoryError:
            # Free the cached blocks this pass left behind so the next batches have room.
            if loaded.device.type == "cuda":
                torch.cuda.empty_cache()
            logger.error("model %s ran out of device memory on a batch of %d", loaded.card.name, len(inputs))
            raise ModelOutOfMemory(
                f"model {loaded.card.name!r} ran out of device memory on a batch of {len(inputs)}; retry later"
            ) from None
        except Exception as exc:  # a bug or bad state in the model: only this batch's requests fail
            logger.exception("model %s failed on a batch of %d", loaded.card.name, len(inputs))
            raise ModelFailed(f"model {loaded.card.name!r} failed on this request: {type(exc).__name__}") from None
        if isinstance(outputs, tuple):
            return tuple(output.cpu() for output in outputs)
        return outputs.cpu()

    return run


async def free(loaded: LoadedModel, finish_queued: bool = False) -> None:
    """Stop a model's batchers (after the requests queued for them, with `finish_queued`) and its thread."""
    for batcher in loaded.batchers.values():
        await (batcher.finish() if finish_queued else batcher.close())
    await asyncio.to_thread(loaded.executor.shutdown, wait=True)


def warm_up_batch(task: Task, card: ModelCard) -> BatchInput:
    """One blank item of the size the model reads, with blank extras (a noise level of 0)."""
    inputs = task.warm_up_input(card)
    return queued(inputs, task.warm_up_extras(inputs.shape[0]))


def warm_up_tasks(card: ModelCard) -> list[Task]:
    """The tasks a warm-up runs for a model: one forward pass for each task its card lists (optional tasks
    only where the model implements them: see `runnable`)."""
    return [task for card_task in card.tasks for task in tasks_of_card_task(card_task)]


def runnable(tasks: list[Task], card: ModelCard) -> list[Task]:
    """The tasks of a warm-up the model runs: an optional task only where its architecture implements it."""
    takes = model_takes(card)
    return [task for task in tasks if not task.optional or task in takes.tasks]
