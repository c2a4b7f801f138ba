"""Which configured default model runs a task when a request names none: the task -> default keys map.

A default key is a field of `AE_DEFAULT_MODELS` (`app.settings.DefaultModels`); the model configured
under it runs the tasks listed for it here when a request names no model, and start-up warms each
default model up on the tasks of its key. A task with no key (`denoise-at-noise-level`, a toy task of
the tests) needs the request to name its model. The task table itself (`models.runtime.tasks`) knows
nothing of the service's configuration.
"""

from __future__ import annotations

from models.runtime.tasks import TASKS, Task

DEFAULT_KEYS: dict[str, tuple[str, ...]] = {
    "denoise": ("denoise",),
    "super-resolve": ("super_resolve",),
    "reconstruct": ("reconstruct",),
    "embed": ("embed",),
    "vae-encode": ("vae",),
    # the manifold is drawn by decoding, with its own default (a model of a 2-D latent space)
    "vae-decode": ("vae", "manifold"),
    # a request with `label` and no model goes to the conditional VAE (optional: app.settings.OPTIONAL_DEFAULTS)
    "conditional-vae-decode": ("conditional_vae",),
    "conditional-vae-encode": ("conditional_vae",),
}


def default_keys(task: Task) -> tuple[str, ...]:
    """The default keys whose models run `task` when a request names none (the first is the task's own)."""
    return DEFAULT_KEYS.get(task.name, ())


def tasks_of_default(key: str) -> list[Task]:
    """The tasks the default model of `key` runs (what start-up warms it up on)."""
    return [task for task in TASKS.values() if key in default_keys(task)]
