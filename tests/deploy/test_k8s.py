"""deploy/k8s: valid against the schemas of the Kubernetes version it names (offline, kubernetes-validate),
and consistent with the service: probes on the app's real routes and port, the Dockerfile's user, a
read-only root filesystem with a writable /tmp, and the RayService carrying deploy/ray/serve.yaml."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.main import create_app
from app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = (K8S / "KUBERNETES_VERSION").read_text().strip()
MANIFESTS = sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")
# The RayService is a KubeRay custom resource: no Kubernetes schema covers it, so its pod templates are
# validated as PodTemplates, and its Serve config against the repository's own.
CUSTOM_KINDS = {"RayService"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in documents(path)]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in all_documents() if doc["kind"] == kind]


def pod_templates() -> list[tuple[str, dict[str, Any]]]:
    """(where, pod template) of every Deployment and of the RayService's head and worker groups."""
    found = [(doc["metadata"]["name"], doc["spec"]["template"]) for doc in of_kind("Deployment")]
    for service in of_kind("RayService"):
        cluster = service["spec"]["rayClusterConfig"]
        found.append((f"{service['metadata']['name']} head", cluster["headGroupSpec"]["template"]))
        for group in cluster["workerGroupSpecs"]:
            found.append((f"{service['metadata']['name']} {group['groupName']}", group["template"]))
    return found


def test_the_kubernetes_version_is_one_the_validator_knows() -> None:
    assert KUBERNETES_VERSION.count(".") == 2
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": [{"port": 80}]}},
        KUBERNETES_VERSION,
        strict=True,
    )


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_every_manifest_is_valid_for_the_named_kubernetes_version(path: Path) -> None:
    for doc in documents(path):
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # strict: unknown fields are errors


@pytest.mark.parametrize("where, template", pod_templates(), ids=[where for where, _ in pod_templates()])
def test_every_pod_template_is_valid_and_locked_down(where: str, template: dict[str, Any]) -> None:
    resource = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    spec = template["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001  # the Dockerfile's `useradd --uid 10001`
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    for container in spec["containers"]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        tmp = [mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp"]
        assert tmp and "emptyDir" in volumes[tmp[0]["name"]], "a writable /tmp"
        assert container["resources"]["requests"] and container["resources"]["limits"]


def test_the_kustomization_lists_the_single_process_manifests() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {"deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"}
    assert all((K8S / name).is_file() for name in kustomization["resources"])


def app_paths() -> set[str]:
    """The GET routes of the app, from its own OpenAPI schema."""
    schema = create_app(Settings()).openapi()
    return {path for path, operations in schema["paths"].items() if "get" in operations}


@pytest.mark.parametrize("deployment", of_kind("Deployment"), ids=lambda doc: doc["metadata"]["name"])
def test_probes_call_the_apps_health_routes_on_the_port_it_listens_on(deployment: dict[str, Any]) -> None:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    settings = Settings(
        **{key.removeprefix("AE_").lower(): value for key, value in env.items()}
    )  # as the app reads them
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/healthz"
    paths = app_paths()
    for probe in probes.values():
        assert probe["path"] in paths
        port = probe["port"]
        assert (ports[port] if isinstance(port, str) else port) == settings.port
    assert settings.host == "0.0.0.0"  # reachable from the kubelet, not only from inside the pod
    assert Path(settings.checkpoints_dir) == Path("/srv/checkpoints")  # where the Dockerfile bakes them
    # The start-up probe must cover the warm-up: at least 2 minutes (docs/scaling.md, 7.8 s through Ray here).
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_the_gpu_variant_asks_for_a_gpu_and_runs_on_cuda() -> None:
    (gpu,) = [doc for doc in of_kind("Deployment") if doc["metadata"]["name"].endswith("-gpu")]
    (container,) = gpu["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {item["name"]: item["value"] for item in container["env"]}["AE_DEVICE"] == "cuda"


def test_service_hpa_and_pdb_point_at_the_deployment() -> None:
    (deployment,) = [doc for doc in of_kind("Deployment") if doc["metadata"]["name"] == "ae-service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (service,) = of_kind("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= {port["name"] for port in container["ports"]}
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ae-service"}
    assert "cpu" in container["resources"]["requests"]  # a CPU utilisation target needs a CPU request
    (pdb,) = of_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # a drain can always proceed


def test_the_rayservice_runs_the_repositorys_serve_config() -> None:
    (service,) = of_kind("RayService")
    assert service["apiVersion"] == "ray.io/v1"
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    expected = copy.deepcopy(yaml.safe_load((REPO_ROOT / "deploy" / "ray" / "serve.yaml").read_text()))
    for application in expected["applications"]:
        application["runtime_env"]["env_vars"]["AE_CHECKPOINTS_DIR"] = "/srv/checkpoints"  # the image's
    assert embedded == {"applications": expected["applications"]}
    version = (REPO_ROOT / "deploy" / "constraints-ray.txt").read_text().split("ray==")[1].split()[0]
    assert service["spec"]["rayClusterConfig"]["rayVersion"] == version
