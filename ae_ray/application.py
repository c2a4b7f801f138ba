"""The Ray Serve application: `build_app`, what `serve run` and the Serve config file import.

    serve run ae_ray.application:build_app                   # defaults (AE_* and AE_RAY_* from the environment)
    serve run deploy/ray/serve.yaml                          # the config file: AE_* in its runtime_env

One `Gateway` (the HTTP app) and one `ModelGroup` deployment per group of checkpoints that the checkpoints
directory holds (ae_ray.options.RayServeOptions.groups), each with its own replicas, autoscaling and resources.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application, Deployment

from ae_ray.gateway import Gateway
from ae_ray.model_group import ModelGroup
from ae_ray.options import RayServeOptions
from app.settings import Settings
from models.checkpoint import CARD_FILE


def checkpoint_names(settings: Settings) -> list[str]:
    """Folders of the checkpoints directory that hold a model card (the registry checks them further)."""
    root = settings.checkpoints_dir
    if not root.is_dir():
        return []
    return sorted(path.name for path in root.iterdir() if (path / CARD_FILE).is_file())


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application: a model deployment per group that has checkpoints, and the gateway in front.

    `args` are RayServeOptions fields (the `args:` of the Serve config, or `serve run ... key=value`); those
    left out come from AE_RAY_* variables, then the defaults.
    """
    # Read now, not the process's cached settings: `serve run` builds the app where the config's env applies.
    return build_application(RayServeOptions(**(args or {})), Settings())


def build_application(options: RayServeOptions, settings: Settings) -> Application:
    """`build_app` with its settings given; the replicas read theirs (AE_*) from their own environment."""
    resolved = options.model_dump()  # every replica gets these values, whatever its own environment says
    present = {options.group_of(name) for name in checkpoint_names(settings)}
    warm = sorted(set(settings.default_models.as_dict().values()))
    model_deployment = serve.deployment(ModelGroup)
    assert isinstance(model_deployment, Deployment)  # called with the class, serve.deployment returns one
    groups = {
        group: model_deployment.options(name=group, **options.model_deployment_options(settings)).bind(
            group, resolved, warm
        )
        for group in options.group_names()
        if group in present
    }
    gateway = serve.deployment(Gateway)
    assert isinstance(gateway, Deployment)
    return gateway.options(name="Gateway", **options.gateway_options(settings)).bind(groups, resolved)
