"""`Gateway`: the HTTP ingress of the Ray Serve application, the plain service's own FastAPI app.

`app.application.create_app` builds the app inside the replica (`__serve_build_asgi_app__`: its metrics cannot be
pickled, so the app object cannot be shipped), so every route, error, header and limit is the plain
service's. One thing differs: the registry's runtime (app.engine.models.runtime.ModelRuntime). The registry here
reads the model cards itself (listing, model choice, validation and errors happen here, as in the plain
service), but its `RayRuntime` sends every forward pass to the checkpoint's model deployment
(`ae_ray.model_group.ModelGroup`) through a deployment handle, with the checkpoint as the multiplexed model id.

The app's start-up (its lifespan) is the plain one with that registry: the default models are loaded and run
a warm-up pass through their deployments before the replica counts as started, so Serve reports the
application RUNNING, and /readyz answers 200, only once every default model has answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from ae_ray.model_group import writable_tensor
from ae_ray.options import RayServeOptions
from app.application import create_app
from app.engine.models.catalogue import ModelEntry
from app.engine.models.registry import ModelRegistry
from app.engine.models.runtime import RunningModel
from app.engine.scheduling.batch_items import BatchInput, Items, inputs_of
from app.engine.scheduling.batching import BatchObserver, BatchOutput
from app.engine.startup import serving
from app.errors import (
    InvalidRequest,
    ModelFailed,
    ModelUnavailable,
    NotReady,
    Overloaded,
    RequestTimeout,
    ServiceError,
)
from app.settings import Settings, settings_from_environment
from models.runtime.tasks import Task

logger = logging.getLogger("ae_ray.gateway")
# A forward pass may first have to load its checkpoint on the replica: allow that on top of the batcher's wait.
LOAD_ALLOWANCE_S = 30.0


class ReplicaLost(ServiceError):
    """The replica running a request died, and so did the replicas of every retry: 503, try again."""

    status_code = 503
    type = "replica_lost"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, param, headers={"Retry-After": "1"})


class RayRuntime:
    """The runtime of the gateway's registry (app.engine.models.runtime.ModelRuntime): the models run in the model
    deployments, the registry here keeps their cards (listing, model choice, validation and errors happen
    here, as in the plain service)."""

    def __init__(self, settings: Settings, groups: dict[str, DeploymentHandle], options: RayServeOptions) -> None:
        self.settings = settings
        self.groups = groups
        self.options = options
        # The gateway holds no weights, so it needs no GPU: its own device is the CPU whatever AE_DEVICE says.
        self.device = torch.device("cpu")

    def handle_for(self, name: str) -> DeploymentHandle:
        group = self.options.group_of(name)
        handle = self.groups.get(group)
        if handle is None:  # a checkpoint added after deployment, in a group that was not deployed
            raise ModelUnavailable(
                f"model {name!r} belongs to the model deployment {group!r}, which this application does not run; "
                "redeploy the application to add it",
                param="model",
            )
        return handle.options(multiplexed_model_id=name)

    async def call(self, name: str, method: str, *args: Any) -> Any:
        """Call `method` of the replica that serves `name`; the replica's own errors come back as they were raised.

        A replica that dies with the request (killed, node lost) costs a retry on another replica, up to
        `options.retries` times; then 503 replica_lost. Nothing is dropped without an answer.
        """
        deadline = self.settings.batch_timeout_s + LOAD_ALLOWANCE_S
        lost: BaseException | None = None
        for _ in range(self.options.retries + 1):
            try:
                async with asyncio.timeout(deadline):
                    return await getattr(self.handle_for(name), method).remote(*args)
            except RayTaskError as exc:  # raised in the replica: the service's errors keep status, type and body
                raise replica_error(name, exc) from None
            except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
                logger.warning("replica serving %s was lost (%s); retrying on another", name, type(exc).__name__)
                lost = exc
            except BackPressureError:  # this gateway's queue for the deployment is full (max_queued_requests)
                raise Overloaded(
                    f"model {name!r} is busy: every replica of its deployment is busy and the queue for them is full",
                    retry_after=1,
                ) from None
            except DeploymentUnavailableError:
                raise NotReady(f"the model deployment of {name!r} is not running") from None
            except TimeoutError:
                raise RequestTimeout(f"model {name!r} did not answer within {deadline:g} s") from None
        raise ReplicaLost(
            f"model {name!r}: the replica running this request was lost {self.options.retries + 1} times "
            f"({type(lost).__name__}); retry"
        )

    async def load(self, entry: ModelEntry) -> None:
        """Have a replica of the model's deployment load it (once; later requests find it loaded)."""
        if entry.state == "loaded":
            return
        if entry.state == "unavailable":
            raise ModelUnavailable(f"model {entry.name!r} is unavailable: {entry.reason}", param="model")
        try:
            await self.call(entry.name, "load")
        except (ModelUnavailable, ModelFailed) as exc:  # broken, or fails its warm-up: listed as such, as plain
            entry.mark_unavailable(exc.message)
            raise
        entry.state = "loaded"

    async def warm_up(self, entry: ModelEntry, tasks: list[Task]) -> None:
        # A replica runs the warm-up passes of every task of the card when it loads a checkpoint
        # (ae_ray.model_group.ModelGroup._open), so loading it there is the warm-up.
        await self.load(entry)
        entry.warmed_up = True

    async def unload(self, entry: ModelEntry) -> None:
        raise InvalidRequest(
            "on Ray Serve each model replica unloads checkpoints itself, least recently used first "
            "(AE_RAY_MODELS_PER_REPLICA)",
            param="name",
        )

    async def run(self, entry: ModelEntry, task: Task, inputs: BatchInput) -> BatchOutput:
        """inputs ((n, C, H, W) images or (n, D) latents, float32, or `Items` with the task's per-item extras)
        -> the task's outputs, computed (and batched) in a replica of the model."""
        await self.load(entry)
        extras = {key: extra.numpy() for key, extra in inputs.extras.items()} if isinstance(inputs, Items) else {}
        arrays = await self.call(entry.name, "run", task.name, inputs_of(inputs).numpy(), extras)
        outputs = tuple(writable_tensor(array) for array in arrays)
        return outputs if len(outputs) > 1 else outputs[0]

    def describe(self, entry: ModelEntry) -> RunningModel | None:
        return None  # /v1/models shows the gateway's device, as before: the replicas may differ

    async def close(self, entries: list[ModelEntry]) -> None:
        return None  # the replicas stop with their deployments


def remote_registry(
    settings: Settings, observer: BatchObserver | None, groups: dict[str, DeploymentHandle], options: RayServeOptions
) -> ModelRegistry:
    """The plain registry's catalogue and model choice, with the models running in the model deployments."""
    cpu_settings = settings.model_copy(update={"device": "cpu"})
    return ModelRegistry(cpu_settings, observer, runtime=RayRuntime(cpu_settings, groups, options))


def replica_error(name: str, exc: RayTaskError) -> ServiceError:
    """The error a replica raised, as the service's own (a bug there becomes the plain 503 model_error)."""
    cause = exc.cause
    if isinstance(cause, ServiceError):
        return cause
    logger.error("model %s failed in its replica: %s", name, exc)
    return ModelFailed(f"model {name!r} failed on this request: {type(cause).__name__}")


def gateway_lifespan(groups: dict[str, DeploymentHandle], options: RayServeOptions) -> Any:
    """The plain start-up (app.engine.startup.serving) with the remote registry: scan, preload and warm up
    through the model deployments. No drain: Serve stops its replicas itself."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings: Settings = app.state.settings
        registry = remote_registry(settings, app.state.metrics, groups, options)
        async with serving(registry, settings):
            app.state.registry = registry
            try:
                yield
            finally:
                app.state.registry = None

    return lifespan


@serve.ingress()
class Gateway:
    """The HTTP front: the plain service's app, built in the replica, with the remote registry."""

    def __init__(self, groups: dict[str, DeploymentHandle], options: dict[str, Any]) -> None:
        self.groups = groups
        self.options = RayServeOptions(**options)

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = create_app(
            settings_from_environment()
        )  # AE_* of this replica's environment (the Serve config's runtime_env)
        app.router.lifespan_context = gateway_lifespan(self.groups, self.options)
        return app
