"""docker-compose.yml and deploy/prometheus.yml, checked by structure (no `docker compose` plugin here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parser import env_values, final_stage, parse

from app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK_BY_DEFAULT = "${AE_BIND_ADDRESS:-127.0.0.1}"  # compose publishes on the loopback unless told otherwise


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text()))


def container_port() -> str:
    return env_values(final_stage(parse(REPO_ROOT / "Dockerfile")))["AE_PORT"]


def test_services_and_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"ae", "ae-gpu", "prometheus"}
    assert "profiles" not in services["ae"], "the CPU service starts with a plain `docker compose up`"
    assert services["ae-gpu"]["profiles"] == ["gpu"]
    assert services["prometheus"]["profiles"] == ["monitoring"]


@pytest.mark.parametrize("name", ["ae", "ae-gpu"])
def test_service_settings_port_volume_healthcheck(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    environment = service["environment"]
    fields = {f"AE_{field.upper()}" for field in Settings.model_fields}
    assert set(environment) <= fields, f"not settings: {set(environment) - fields}"
    assert environment["AE_HOST"] == "0.0.0.0"
    assert str(environment["AE_PORT"]) == container_port()
    assert all(port.endswith(f":{container_port()}") for port in service["ports"])
    assert all(port.startswith(LOOPBACK_BY_DEFAULT) for port in service["ports"]), "published on every interface"

    (volume,) = service["volumes"]
    assert volume["type"] == "bind" and volume["read_only"] is True
    assert volume["source"] == "./checkpoints" and volume["target"] == environment["AE_CHECKPOINTS_DIR"]
    assert (REPO_ROOT / volume["source"]).is_dir()

    test = service["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python"
    assert f"127.0.0.1:{container_port()}/readyz" in test[-1]
    assert service["build"]["context"] == "."


def test_cpu_and_gpu_images_differ_by_the_build_argument(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["ae"]["build"]["args"]["TORCH_VARIANT"] == "cpu"
    assert services["ae-gpu"]["build"]["args"]["TORCH_VARIANT"].startswith("cu")
    assert services["ae"]["environment"]["AE_DEVICE"] == "cpu"
    assert services["ae-gpu"]["environment"]["AE_DEVICE"].startswith("cuda")
    (device,) = services["ae-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    # both may run at once (`docker compose --profile gpu up`), so they publish different host ports
    assert services["ae"]["ports"] == [f"{LOOPBACK_BY_DEFAULT}:8000:8000"]
    assert services["ae-gpu"]["ports"] == [f"{LOOPBACK_BY_DEFAULT}:${{AE_GPU_PORT:-8001}}:8000"]


@pytest.mark.parametrize("name", ["ae", "ae-gpu"])
def test_stopping_leaves_time_for_the_drain_and_the_longest_request(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    grace = service["stop_grace_period"]
    assert grace.endswith("s"), "in seconds, e.g. 100s"
    drain = float(service["environment"].get("AE_SHUTDOWN_DRAIN_S", Settings().shutdown_drain_s))
    defaults = Settings()
    assert float(grace[:-1]) > drain + defaults.batch_timeout_s + defaults.body_timeout_s


def test_prometheus_scrapes_the_services_metrics(compose: dict[str, Any]) -> None:
    service = compose["services"]["prometheus"]
    assert service["ports"] == [f"{LOOPBACK_BY_DEFAULT}:9090:9090"]
    assert ":" in service["image"] and not service["image"].endswith(":latest")
    (volume,) = service["volumes"]
    assert volume["read_only"] is True
    config = yaml.safe_load((REPO_ROOT / volume["source"]).read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    targets = job["static_configs"][0]["targets"]
    assert {f"{name}:{container_port()}" for name in ("ae", "ae-gpu")} == set(targets)


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="no `docker compose` plugin on this machine",
)
def test_docker_compose_config_accepts_the_file() -> None:
    subprocess.run(["docker", "compose", "config", "--quiet"], cwd=REPO_ROOT, check=True)
