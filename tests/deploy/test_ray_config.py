"""deploy/ray/serve.yaml: the Serve config of the Ray application, checked without Ray (it needs only its
settings classes): every AE_* variable is a setting of the service, the args are ae_ray options, and the
deployments it configures are those the application builds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from ae_ray.options import RayServeOptions
from app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((REPO_ROOT / "deploy" / "ray" / "serve.yaml").read_text())


def test_the_application_is_the_ae_ray_builder() -> None:
    (application,) = CONFIG["applications"]
    assert application["import_path"] == "ae_ray.application:build_app"
    module, name = application["import_path"].split(":")
    assert (REPO_ROOT / Path(*module.split("."))).with_suffix(".py").is_file()
    assert f"def {name}(" in (REPO_ROOT / "ae_ray" / "application.py").read_text()


def test_every_ae_variable_is_a_setting_of_the_service_and_valid() -> None:
    (application,) = CONFIG["applications"]
    env = application["runtime_env"]["env_vars"]
    fields = {f"AE_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    settings = Settings(**{key.removeprefix("AE_").lower(): value for key, value in env.items()})
    assert settings.batch_max_size >= 1


def test_args_are_ray_options_and_name_the_configured_deployments() -> None:
    (application,) = CONFIG["applications"]
    options = RayServeOptions(**application["args"])  # extra="forbid": a misspelt option fails here
    configured = {deployment["name"] for deployment in application["deployments"]}
    assert configured == {"Gateway", *options.groups}
    for deployment in application["deployments"]:
        if deployment["name"] == "Gateway":
            continue
        scaling = deployment["autoscaling_config"]
        assert scaling["min_replicas"] <= scaling["initial_replicas"] <= scaling["max_replicas"]
        assert deployment["max_ongoing_requests"] >= scaling["target_ongoing_requests"]
        assert deployment["max_queued_requests"] == -1 or deployment["max_queued_requests"] >= 1
        assert {"num_cpus", "num_gpus"} <= set(deployment["ray_actor_options"])


def test_a_model_deployment_takes_and_queues_two_full_batches_unless_told_otherwise() -> None:
    settings = Settings(batch_max_size=16)
    default = RayServeOptions().model_deployment_options(settings)
    assert default["max_ongoing_requests"] == default["max_queued_requests"] == 32
    told = RayServeOptions(max_ongoing_requests=1, max_queued_requests=-1).model_deployment_options(settings)
    assert told["max_ongoing_requests"] == 1 and told["max_queued_requests"] == -1  # -1: Serve's unbounded queue
    with pytest.raises(ValidationError, match="max_queued_requests"):
        RayServeOptions(max_queued_requests=0)


def test_checkpoints_are_grouped_by_their_names() -> None:
    options = RayServeOptions()
    assert options.group_of("mnist-denoise") == "mnist"
    assert options.group_of("bsd-denoise-sigma25") == options.group_of("t91-sr-x2") == "photo"
    assert options.group_of("my-denoiser") == "models"
    shipped = sorted(path.name for path in (REPO_ROOT / "checkpoints").iterdir() if (path / "config.json").is_file())
    assert {options.group_of(name) for name in shipped} <= {"mnist", "photo"}, "every shipped model has its group"
