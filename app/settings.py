"""The service's settings: one pydantic-settings class, read once from `AE_*` environment variables.

Every field can be set in the environment with the `AE_` prefix, e.g. `AE_CHECKPOINTS_DIR=/models`,
`AE_DEVICE=cuda:0`, `AE_PRELOAD=all`. Dict and list fields take JSON, e.g.
`AE_DEFAULT_MODELS='{"denoise": "my-denoiser"}'` (tasks left out keep their defaults), or one task
at a time: `AE_DEFAULT_MODELS__DENOISE=my-denoiser`.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
Preload = Literal["defaults", "all", "none"] | list[str]


# Default keys whose model may be missing from the checkpoints directory without making the service unready.
OPTIONAL_DEFAULTS = ("conditional_vae",)


class DefaultModels(BaseModel):
    """The model each task uses when a request names none (checkpoint folder names), by the default keys
    of app.engine.models.defaults."""

    denoise: str = "mnist-denoise"
    super_resolve: str = "mnist-sr-x2"
    reconstruct: str = "mnist-ae"
    embed: str = "mnist-ae"
    vae: str = "mnist-vae"
    # /v1/vae/sample and /decode with a label, /v1/vae/restyle. Optional (OPTIONAL_DEFAULTS): a checkpoints
    # directory without it still serves everything else, and refuses only requests with labels.
    conditional_vae: str = "mnist-cvae"
    # The manifold is a picture of a 2-D latent space, so it needs a model whose latent size is 2.
    manifold: str = "mnist-vae-2d"

    def as_dict(self) -> dict[str, str]:
        return self.model_dump()


class Settings(BaseSettings):
    # AE_DEFAULT_MODELS='{"denoise": "x"}' or, one task at a time, AE_DEFAULT_MODELS__DENOISE=x
    model_config = SettingsConfigDict(env_prefix="AE_", env_nested_delimiter="__", extra="ignore")

    # Models
    checkpoints_dir: Path = Path("checkpoints")
    device: str = Field(default="auto", description="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    precision: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="the model step's precision (models.runtime.execution): auto uses bfloat16/float16 only where the "
        "card's quality guard allows it and the hardware runs it natively; a named one the hardware cannot run "
        "stops start-up",
    )
    compile: Literal["auto", "on", "off"] = Field(
        default="auto", description="torch.compile the models (auto: on CUDA only; compiling on a CPU takes minutes)"
    )
    default_models: DefaultModels = Field(default_factory=DefaultModels)
    preload: Preload = Field(
        default="defaults", description="models loaded at start-up: defaults, all, none or a JSON list of names"
    )
    owned_by: str = Field(
        default="ae-service",
        description="`owned_by` of every /v1/models entry (OpenAI's field): who publishes these models",
    )
    verify_weights: bool = True  # check each weights file's sha256 against its model card
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="torch.set_num_threads; unset: the cores this process may use (its CPU affinity and cgroup "
        "quota), shared among AE_WORKERS",
    )

    # Limits, checked before any work is done
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    max_pixels: int = Field(default=4096 * 4096, ge=1, description="width x height of one decoded image")
    max_images_per_request: int = Field(default=64, ge=1)
    max_samples: int = Field(default=64, ge=1, description="largest n of /v1/vae/sample")
    max_steps: int = Field(default=64, ge=2, description="largest steps of /v1/vae/interpolate")
    max_manifold_size: int = Field(default=30, ge=1, description="largest grid side of /v1/vae/manifold")

    # Batching (see app.engine.scheduling.batching): requests for the same model and task share forward passes
    batch_max_size: int = Field(default=64, ge=1)
    batch_max_delay_ms: float = Field(default=2.0, ge=0)
    batch_adaptive_delay: bool = Field(
        default=True, description="wait the delay only when the previous pass had several callers"
    )
    batch_max_queue_images: int = Field(default=2048, ge=1)
    batch_timeout_s: float = Field(default=30.0, gt=0)
    batch_inline_max_ms: float = Field(
        default=1.0,
        ge=0,
        description="a lone request on an idle model thread, expected within this, runs on the event loop; 0: never",
    )
    # Admission (app.http.admission): a request is admitted when its expected wait (the model's measured cost per
    # image times the images ahead of it, plus the event loop's lag) is within the queue budget.
    queue_budget_ms: float = Field(
        default=100.0,
        gt=0,
        description="a model's requests beyond two full batches (2 x batch_max_size in flight) are admitted only "
        "while their expected wait is within this; the rest get 503 overloaded with Retry-After at once",
    )

    direct_path: bool = Field(
        default=True,
        description="answer the image routes without FastAPI's routing and dependency solving (app.http.direct; "
        "the same answers, measured faster); false: every request through FastAPI",
    )

    # Connections (app.process.connections): slow or idle clients must not hold the process's file descriptors
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="a new connection, or the first byte of its next request, must bring the request's headers "
        "within this; else 408 and the connection is closed",
    )
    body_timeout_s: float = Field(
        default=60.0, gt=0, description="a request's body must arrive within this after its headers; else 408"
    )
    keep_alive_s: float = Field(
        default=20.0,
        gt=0,
        description="an idle keep-alive connection is closed after this; longer than clients' own pool expiry "
        "(httpx: 5 s) so that a client never reuses a connection the server is closing",
    )
    max_connections: int = Field(
        default=2048, ge=1, description="open connections per process; more are refused at once with a 503"
    )
    # Shutdown (app.process.drain): SIGTERM or SIGINT starts a drain
    shutdown_drain_s: float = Field(
        default=5.0,
        ge=0,
        description="after SIGTERM: /readyz says 503 and requests are still served (each answer closes its "
        "connection) for this long; then the server stops accepting and finishes what it has",
    )

    # Access control (app.http.security): all off when empty
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="keys for /v1 as Authorization: Bearer; JSON list or comma list"
    )
    admin_api_key: str | None = Field(default=None, description="mounts the management routes; their only key")
    metrics_require_key: bool = Field(default=False, description="/metrics needs an API key too (when keys are set)")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="browser origins allowed by CORS; JSON list or comma list"
    )

    # The playground page at / (app.http.routes.playground); its static files never need a key
    playground: bool = Field(default=True, description="serve the playground page at /; false: / is a 404")

    # Server (used by the `ae-serve` command; `uvicorn app.main:app` takes its own flags)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Off by default: a port is opened only where someone asks for it, and existing set-ups stay as they were
    # (deploy/k8s/inferenceservice.yaml asks for 8081, KServe's gRPC port of a custom predictor).
    grpc_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="the Open Inference Protocol over gRPC (app.oip) on this port, on AE_HOST, in the HTTP server's "
        "process; 0: off",
    )
    workers: int = Field(default=1, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _json_or_comma_list(cls, value: object) -> object:
        """'["a", "b"]' or 'a,b' from the environment; lists pass through. Blank items are dropped."""
        if isinstance(value, str):
            text = value.strip()
            items = json.loads(text) if text.startswith("[") else text.split(",")
            return [str(item).strip() for item in items if str(item).strip()]
        return value

    @field_validator("admin_api_key", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(value):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value


@lru_cache(maxsize=1)
def settings_from_environment() -> Settings:
    """The settings of this process, read from the AE_* environment once: what `ae-serve` and the module-level
    `app.main.app` start with. Code that serves a request reads the settings its app was created with
    (`app.http.dependencies.get_settings`), never this."""
    return Settings()
