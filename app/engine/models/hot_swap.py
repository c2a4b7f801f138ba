"""Replacing a served model by its folder's current checkpoint without failing a request.

A loaded model is swapped only once the new one is built, checked and warmed up; requests already queued
for the old one are served by it, then it is freed. The new checkpoint is refused (ReplacementRefused, 409)
and the old one keeps serving when it is broken (sha256, format, architecture), fails its warm-up, or would
change what requests may send (tasks, input, scale, latent size: a request prepared for the old model must
run on the new one). A model that is not loaded has its card re-read and checked, to be loaded on first use.
"""

from __future__ import annotations

import asyncio
import logging

from app.engine.models.catalogue import ModelCatalogue, ModelEntry
from app.engine.models.loading import (
    LoadedModel,
    batcher_of,
    build_loaded_model,
    free,
    runnable,
    warm_up_batch,
    warm_up_tasks,
)
from app.engine.models.runtime import LocalRuntime, ModelRuntime
from app.errors import ReplacementRefused
from models.checkpoint import CheckpointError, ModelCard

logger = logging.getLogger("app.registry")


async def replace(catalogue: ModelCatalogue, runtime: ModelRuntime, entry: ModelEntry) -> None:
    """Serve `entry` from its folder's current card and weights (see the module docstring)."""
    if entry.loaded is None:
        await asyncio.to_thread(_refresh_card, catalogue, entry)
        return
    assert isinstance(runtime, LocalRuntime), "only the local runtime loads models in this process"
    await _swap(runtime, entry, entry.loaded)


def _refresh_card(catalogue: ModelCatalogue, entry: ModelEntry) -> None:
    serving = entry.card.weights_sha256 if entry.card is not None else "nothing"
    try:
        catalogue.refresh_card(entry)
    except CheckpointError as exc:
        raise ReplacementRefused(f"model {entry.name!r} keeps its checkpoint ({serving}): {exc}") from None


async def _swap(runtime: LocalRuntime, entry: ModelEntry, old: LoadedModel) -> None:
    refused = f"model {entry.name!r} keeps serving the weights with sha256 {old.card.weights_sha256}"
    try:
        new = await asyncio.to_thread(build_loaded_model, entry.name, entry.directory, runtime.settings, runtime.device)
    except Exception as exc:
        raise ReplacementRefused(f"{refused}: the new checkpoint is refused: {exc}") from None
    try:
        changed = interface_changes(old.card, new.card)
        if changed:
            raise ReplacementRefused(
                f"{refused}: the new checkpoint changes {', '.join(changed)}; serve it under a new name"
            )
        for task in runnable(warm_up_tasks(new.card), new.card):
            batcher = batcher_of(new, task, runtime.batching, runtime.observer)
            await batcher.submit(warm_up_batch(task, new.card))
    except ReplacementRefused:
        await free(new)
        raise
    except Exception as exc:
        await free(new)
        raise ReplacementRefused(f"{refused}: the new model failed its warm-up pass: {exc}") from None
    if entry.loaded is not old:  # unloaded meanwhile: the new model is not wanted
        await free(new)
        raise ReplacementRefused(f"model {entry.name!r} was unloaded while its replacement was being loaded")
    # One step on the event loop: a request takes entry.loaded's batcher and queues its images without
    # yielding in between (LocalRuntime.run), so none reaches the old batchers after this line.
    entry.loaded, entry.card, entry.verified, entry.warmed_up = new, new.card, True, True
    logger.info("model %s now serves weights %s (was %s)", entry.name, new.card.weights_sha256, old.card.weights_sha256)
    await free(old, finish_queued=True)


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
