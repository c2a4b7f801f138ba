"""Which model a request means: the model-choice policy, apart from where models come from
(app.engine.models.registry).

A request names a model or leaves it to the task's configured default (`AE_DEFAULT_MODELS`, keyed as
`app.engine.models.defaults` says); the model must list the task's card task and be servable.
Super-resolution may instead be chosen by its factor (`scale`). The same defaults decide what start-up
preloads and warms up, and when the service is ready.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.engine.models.catalogue import ModelEntry
from app.engine.models.defaults import default_keys
from app.engine.models.registry import ModelRegistry
from app.errors import InvalidRequest, ModelUnavailable, TaskNotSupported
from app.settings import OPTIONAL_DEFAULTS, DefaultModels, Preload
from models.runtime.tasks import SUPER_RESOLVE, Task, model_takes


@dataclass
class ModelChoice:
    registry: ModelRegistry
    defaults: DefaultModels

    def default_for(self, key: str) -> str:
        """The configured default model of a default key of the task table (e.g. 'super_resolve')."""
        return self.defaults.as_dict()[key]

    def choose(self, name: str | None, task: Task, default_key: str | None = None) -> ModelEntry:
        """The entry a request means: `name`, else the default of `default_key` (the task's first by default),
        checked to do the task and to be servable."""
        if name is None:
            key = default_key or next(iter(default_keys(task)), None)
            if key is None:
                raise InvalidRequest(f"{task.name} has no default model: name one with 'model'", param="model")
            name = self.default_for(key)
        entry = self.registry.entry(name)
        if entry.card is not None and task.card_task not in entry.card.tasks:
            raise TaskNotSupported(
                f"model {entry.name!r} does not do {task.card_task}; it does: {', '.join(entry.card.tasks)}",
                param="model",
            )
        if entry.state == "unavailable":
            raise ModelUnavailable(f"model {entry.name!r} is unavailable: {entry.reason}", param="model")
        return entry

    def companion(self, entry: ModelEntry, channels: int) -> ModelEntry:
        """The model for pictures of `channels` channels: `entry`, or the companion its card names (a grayscale
        and a colour photo denoiser name each other) when that one is made for them, does `entry`'s tasks and
        is servable; else `entry` itself."""
        card = entry.card
        if card is None or card.input.channels == channels:
            return entry
        name = model_takes(card).companion
        other = self.registry.entries.get(name) if name else None
        if (
            other is None
            or other.card is None
            or other.state == "unavailable"
            or other.card.input.channels != channels
            or not set(card.tasks) <= set(other.card.tasks)
        ):
            return entry
        return other

    def choose_super_resolution(self, name: str | None, scale: int | None) -> ModelEntry:
        """The super-resolution model a request means. With `model`, that model, whose factor must be `scale`
        when both are given. Without it, the default, unless `scale` asks for another factor: then a servable
        model with that factor, those of the default's domain (MNIST digits, photographs) first, then by name."""
        if name is not None or scale is None:
            entry = self.choose(name, SUPER_RESOLVE)
            if scale is not None and entry.card is not None and entry.card.scale != scale:
                raise InvalidRequest(
                    f"model {entry.name!r} upscales x{entry.card.scale}, not x{scale}; "
                    "leave out scale, or leave out model to have one chosen by its scale",
                    param="scale",
                )
            return entry
        # .get: a default missing from the checkpoints folder need not stop a request that names a scale.
        default_name = self.default_for(default_keys(SUPER_RESOLVE)[0])
        default = self.registry.entries.get(default_name)
        domain = default.card.input.domain if default is not None and default.card is not None else None
        servable = [
            (entry.name, entry.card)
            for entry in self.registry.entries.values()
            if entry.card is not None and SUPER_RESOLVE.card_task in entry.card.tasks and entry.state != "unavailable"
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
        return self.choose(matching[0][2], SUPER_RESOLVE)

    def preload_names(self, preload: Preload) -> list[str]:
        """The models to load at start-up: all, none, the defaults (those that exist) or a list of names."""
        if preload == "all":
            return sorted(self.registry.entries)
        if preload == "none":
            return []
        if preload == "defaults":
            return sorted(set(self.defaults.as_dict().values()) & set(self.registry.entries))
        return list(preload)

    def not_ready_reasons(self) -> list[str]:
        """Why the service is not ready: a default model that is missing, unavailable or not warmed up."""
        reasons = []
        for key, name in self.defaults.as_dict().items():
            entry = self.registry.entries.get(name)
            if entry is None and key in OPTIONAL_DEFAULTS:
                continue
            if entry is None:
                reasons.append(f"default {key} model {name!r} is not in {self.registry.settings.checkpoints_dir}")
            elif entry.state == "unavailable":
                reasons.append(f"default {key} model {name!r} is unavailable: {entry.reason}")
            elif not entry.warmed_up:
                reasons.append(f"default {key} model {name!r} has not run a warm-up forward pass yet")
        return reasons
