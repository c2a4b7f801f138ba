"""deploy/k8s: valid against the schemas of the Kubernetes version it names (offline, kubernetes-validate),
and consistent with the service: probes on the app's real routes and port, the Dockerfile's user, a
read-only root filesystem with a writable /tmp, the RayService carrying deploy/ray/serve.yaml, and the KServe
InferenceService valid against KServe's own schema (vendored, tests/deploy/schemas) with the ports the app
serves the Open Inference Protocol on."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = (K8S / "KUBERNETES_VERSION").read_text().strip()
MANIFESTS = sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")
# The RayService is a KubeRay custom resource: no Kubernetes schema covers it, so its pod templates are
# validated as PodTemplates, and its Serve config against the repository's own.
CUSTOM_KINDS = {"RayService", "InferenceService"}
# KServe's InferenceService schema (tests/deploy/schemas/README.md: source, commit, licence, what was kept).
KSERVE_SCHEMA = Path(__file__).resolve().parent / "schemas" / "kserve-inferenceservice-v1beta1.json"
# The predictor's fields that are KServe's, not a pod spec's.
KSERVE_PREDICTOR_FIELDS = {
    "minReplicas",
    "maxReplicas",
    "scaleMetric",
    "scaleTarget",
    "containerConcurrency",
    "timeout",
}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in documents(path)]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in all_documents() if doc["kind"] == kind]


def pod_templates() -> list[tuple[str, dict[str, Any]]]:
    """(where, pod template) of every Deployment and of the RayService's head and worker groups."""
    found = [(doc["metadata"]["name"], doc["spec"]["template"]) for doc in of_kind("Deployment")]
    for inference in of_kind("InferenceService"):
        predictor = inference["spec"]["predictor"]
        pod = {key: value for key, value in predictor.items() if key not in KSERVE_PREDICTOR_FIELDS}
        found.append((f"{inference['metadata']['name']} predictor", {"spec": pod}))
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


def strict(schema: Any) -> Any:
    """A CRD's structural schema with unknown fields refused, as `kubectl apply --validate=strict` does: every
    object that lists its properties, and keeps no unknown fields, gets additionalProperties false."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    copied = {key: strict(value) for key, value in schema.items()}
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        copied.setdefault("additionalProperties", False)
    return copied


def kserve_validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(strict(json.loads(KSERVE_SCHEMA.read_text())))


def test_the_inferenceservice_is_valid_against_kserves_schema() -> None:
    (inference,) = of_kind("InferenceService")
    assert inference["apiVersion"] == "serving.kserve.io/v1beta1"
    errors = [f"{list(error.absolute_path)}: {error.message}" for error in kserve_validator().iter_errors(inference)]
    assert not errors, errors


def test_the_schema_check_refuses_what_kserve_would() -> None:
    """The check can fail: an unknown field, a wrong type, and protocolVersion on a custom predictor (KServe has
    it only on model-format predictors) are refused."""
    (inference,) = of_kind("InferenceService")
    validator = kserve_validator()
    for path, value in ((("spec", "predictor", "protocolVersion"), "v2"), (("spec", "predictor", "minReplicas"), "2")):
        broken = copy.deepcopy(inference)
        broken[path[0]][path[1]][path[2]] = value
        assert not validator.is_valid(broken), path
    broken = copy.deepcopy(inference)
    broken["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    assert not validator.is_valid(broken)


def test_the_inferenceservice_serves_the_open_inference_protocol_on_its_ports() -> None:
    (inference,) = of_kind("InferenceService")
    (container,) = inference["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"
    env = {item["name"]: item["value"] for item in container["env"]}
    settings = Settings(**{key.removeprefix("AE_").lower(): value for key, value in env.items()})
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http1": settings.port, "h2c": settings.grpc_port}  # KServe's names: REST and gRPC
    assert settings.host == "0.0.0.0" and settings.grpc_port != 0
    for kind, path in (("startupProbe", "/v2/health/live"), ("livenessProbe", "/v2/health/live")):
        assert container[kind]["httpGet"] == {"path": path, "port": settings.port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": settings.port}
    # The probes are routes of the app (not in its OpenAPI, which describes /v1): asked before start-up, as a
    # kubelet may, live answers 200 and ready 503.
    client = TestClient(create_app(Settings()))  # no lifespan: nothing is loaded
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 503
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
