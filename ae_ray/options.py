"""The Ray-side settings: `AE_RAY_*` environment variables, or the `args:` of the Serve config file.

The service's own settings (`AE_*`, app.settings) configure every replica as they configure `ae-serve`:
checkpoints, device, batching, limits. These add what only exists on Ray: which checkpoints share a model
deployment, how many replicas each gets and with what resources, how many checkpoints one replica keeps
loaded, and which batcher runs inside a replica. Per-deployment fields of the Serve config file
(`deployments:` in deploy/ray/serve.yaml) override the defaults built from these.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.settings import Settings


class RayServeOptions(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AE_RAY_", extra="forbid")

    # Deployment name -> checkpoint name patterns (fnmatch). Each group is one deployment that scales on its
    # own; a checkpoint that matches no group goes to `default_group`.
    groups: dict[str, list[str]] = Field(
        default_factory=lambda: {"mnist": ["mnist-*"], "photo": ["bsd-*", "t91-*", "photo-*"]},
        description="deployment name -> fnmatch patterns of the checkpoints it serves (JSON)",
    )
    default_group: str = Field(default="models", description="the deployment of checkpoints no group names")

    # Replicas of each model deployment: a fixed number, or autoscaling on requests in flight per replica.
    num_replicas: int | None = Field(default=None, ge=1, description="fixed replicas per group (no autoscaling)")
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=4, ge=1)
    target_ongoing_requests: float = Field(default=16, gt=0, description="autoscaling target per replica")
    upscale_delay_s: float = Field(default=5.0, ge=0)
    downscale_delay_s: float = Field(default=60.0, ge=0)
    cpus_per_replica: float = Field(default=0.5, ge=0, description="num_cpus of a model replica (fractions too)")
    gpus_per_replica: float = Field(default=0.0, ge=0, description="num_gpus of a model replica (fractions too)")
    gateway_cpus: float = Field(default=0.5, ge=0, description="num_cpus of an HTTP gateway replica")
    gateway_replicas: int = Field(default=1, ge=1)

    # How many requests a model replica takes at once, and how many may wait for one: Serve's
    # max_ongoing_requests and max_queued_requests of every model deployment. None: 2 x AE_BATCH_MAX_SIZE for
    # both (requests_per_model; model_deployment_options says why). The queue is each caller's: every gateway
    # replica's handle to a deployment holds at most this many requests that no replica has taken yet, and
    # refuses the next one at once (BackPressureError: the gateway answers 503 overloaded with Retry-After).
    max_ongoing_requests: int | None = Field(default=None, ge=1, description="requests a model replica takes at once")
    max_queued_requests: int | None = Field(
        default=None, ge=-1, description="requests a gateway replica holds per model deployment (-1: no bound)"
    )

    # Inside a model replica.
    models_per_replica: int = Field(default=4, ge=1, description="checkpoints one replica keeps loaded (LRU)")
    # @serve.batch measured better inside a replica on this machine (docs/scaling.md#batching-inside-a-replica).
    batching: Literal["project", "serve"] = Field(
        default="serve",
        description=(
            "serve: @serve.batch, counting images; project: app.engine.scheduling.batching.Batcher (adaptive delay)"
        ),
    )
    # A forward pass whose replica died is sent again to another replica this many times, then answered 503.
    retries: int = Field(default=2, ge=0)

    @model_validator(mode="after")
    def _replica_range(self) -> RayServeOptions:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        if self.max_queued_requests == 0:
            raise ValueError("max_queued_requests is -1 (no bound) or at least 1")
        if self.default_group in self.groups:
            raise ValueError(f"default_group {self.default_group!r} is also a named group")
        return self

    def group_of(self, model: str) -> str:
        """The deployment that serves checkpoint `model`: the first group with a matching pattern."""
        for group, patterns in self.groups.items():
            if any(fnmatch.fnmatchcase(model, pattern) for pattern in patterns):
                return group
        return self.default_group

    def group_names(self) -> list[str]:
        return [*self.groups, self.default_group]

    def model_deployment_options(self, settings: Settings) -> dict[str, Any]:
        """`.options(...)` of every model deployment, from these settings and the service's (AE_*).

        By default a replica takes as many requests at once as the plain service always admits per model (two
        full batches, 2 x AE_BATCH_MAX_SIZE): its batcher needs them in hand to form full batches. As many again
        may wait in each gateway replica for a replica of the deployment to take them; one more is refused at
        once with 503 overloaded (Retry-After), where an unbounded queue (Serve's default) would hold it until it
        timed out (504). The gateway's admission control sheds a flood before this; the bound is what holds when
        its estimate is behind, e.g. while replicas restart or the autoscaler has not added them yet (queued
        requests count towards its target, so a bound of this size still lets it scale to max_replicas).
        """
        scaling: dict[str, Any]
        if self.num_replicas is not None:
            scaling = {"num_replicas": self.num_replicas}
        else:
            scaling = {
                "autoscaling_config": {
                    "min_replicas": self.min_replicas,
                    "initial_replicas": max(self.min_replicas, 1),
                    "max_replicas": self.max_replicas,
                    "target_ongoing_requests": self.target_ongoing_requests,
                    "upscale_delay_s": self.upscale_delay_s,
                    "downscale_delay_s": self.downscale_delay_s,
                }
            }
        return {
            **scaling,
            "max_ongoing_requests": or_default(self.max_ongoing_requests, requests_per_model(settings)),
            "max_queued_requests": or_default(self.max_queued_requests, requests_per_model(settings)),
            "ray_actor_options": {"num_cpus": self.cpus_per_replica, "num_gpus": self.gpus_per_replica},
        }

    def gateway_options(self, settings: Settings) -> dict[str, Any]:
        # The gateway holds requests while the model replicas work: allow every model's share at once.
        return {
            "num_replicas": self.gateway_replicas,
            "max_ongoing_requests": requests_per_model(settings) * len(self.group_names()),
            "ray_actor_options": {"num_cpus": self.gateway_cpus},
        }


def requests_per_model(settings: Settings) -> int:
    """Requests one model always has admitted in the plain service: two full batches (app.http.admission)."""
    return 2 * settings.batch_max_size


def or_default(value: int | None, default: int) -> int:
    return default if value is None else value
