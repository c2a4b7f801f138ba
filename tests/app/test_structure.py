"""The house rules of docs/architecture.md, checked by doing them: a new architecture and a new task served
end to end, each weights file hashed once at start-up, a service layer that knows nothing of HTTP, and
folders whose modules import only the layers below them."""

from __future__ import annotations

import ast
import base64
import io
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Protocol, runtime_checkable

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, make_settings
from fastapi import APIRouter, Depends, Response
from fastapi.testclient import TestClient
from PIL import Image

import app.engine.models.catalogue
import models.checkpoint
from app.engine.models.defaults import default_keys
from app.engine.requests.jobs import ImageJob
from app.http.dependencies import ServiceDep
from app.http.responses import images_response
from app.http.routes.common import image_job
from app.http.schemas import ImageOptions
from app.main import create_app
from models.architectures import ARCHITECTURES, Architecture, register
from models.architectures.protocols import Denoiser
from models.checkpoint import WEIGHTS_FILE, InputSpec, ModelCard, card_tasks, save_checkpoint
from models.runtime.tasks import TASKS, Task
from models.runtime.tasks import register as register_task
from models.runtime.tasks import unregister as unregister_task

# -- a new architecture and a new task, as docs/architecture.md says to add them ------------------------


@runtime_checkable
class Inverter(Protocol):
    """The new task's protocol: what an architecture implements to invert images."""

    def invert(self, images: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class ToyConfig:
    gain: float = 1.0


class ToyNegative(Architecture, Denoiser, Inverter):
    """A toy architecture: 'denoises' by returning gain * image (an existing task), and inverts (a new one)."""

    name: ClassVar[str] = "toy-negative"
    config_class = ToyConfig
    config: ToyConfig

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        self.gain = torch.nn.Parameter(torch.tensor(config.gain))

    def denoise(self, images: torch.Tensor) -> torch.Tensor:
        return (images * self.gain).clamp(0.0, 1.0)

    def invert(self, images: torch.Tensor) -> torch.Tensor:
        return 1.0 - images


INVERT = Task("invert", "invert", Inverter, lambda model, images: model.invert(images))
InvertRequest = Annotated[ImageJob[ImageOptions], Depends(image_job(ImageOptions))]


def invert_router() -> APIRouter:
    """The one route the new task needs: parse (the shared opening dependency), serve, answer."""
    router = APIRouter(prefix="/v1")

    @router.post("/invert", response_class=Response)
    async def invert(job: InvertRequest, service: ServiceDep) -> Response:
        images = await service.image_task(job, INVERT)
        return await images_response(images, job.options.response_format, job.upload.source, service.metrics, job.route)

    return router


@pytest.fixture
def toy_client(tmp_path: Path) -> Iterator[TestClient]:
    register(ToyNegative)
    register_task(INVERT)
    try:
        card = ModelCard(
            name="toy-negative",
            tasks=["denoise", "invert"],
            architecture=ToyNegative.name,
            architecture_config={},
            input=InputSpec(channels=1, height=None, width=None, domain="user-images"),
            description="a toy model of tests/app/test_structure.py",
        )
        save_checkpoint(ToyNegative(ToyConfig(gain=0.5)), card, tmp_path / "toy-negative")
        application = create_app(make_settings(tmp_path, preload="all"))
        application.include_router(invert_router())
        with TestClient(application, raise_server_exceptions=False) as client:
            yield client
    finally:
        unregister_task(INVERT.name)
        ARCHITECTURES.pop(ToyNegative.name, None)


def png(pixels: np.ndarray) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format="PNG")
    return stream.getvalue()


def pixels_of(response_body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(response_body)))


GRADIENT = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (9, 1))  # 9 x 25, any size goes


def test_a_new_architecture_serves_an_existing_task_through_its_route(toy_client: TestClient) -> None:
    response = toy_client.post("/v1/denoise?model=toy-negative", files={"image": ("g.png", png(GRADIENT))})
    assert response.status_code == 200, response.text
    assert response.headers["x-model"] == "toy-negative"
    assert np.abs(pixels_of(response.content).astype(int) - (GRADIENT.astype(int) // 2)).max() <= 1


def test_a_new_task_is_served_end_to_end_by_its_table_row_and_one_route(toy_client: TestClient) -> None:
    assert "invert" in card_tasks() and TASKS["invert"] is INVERT
    response = toy_client.post(
        "/v1/invert?model=toy-negative&response_format=json",
        json={"images": [base64.b64encode(png(GRADIENT)).decode()]},
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"][0]
    inverted = pixels_of(base64.b64decode(data["b64_png"]))
    assert (data["width"], data["height"]) == (25, 9)
    np.testing.assert_array_equal(inverted, 255 - GRADIENT)
    # The table's rules hold for the new task like for the others: a task without a default needs a name,
    # and a model whose card does not list the task is refused.
    no_model = toy_client.post("/v1/invert", files={"image": ("g.png", png(GRADIENT))})
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
    listed = toy_client.get("/v1/models/toy-negative").json()
    assert listed["tasks"] == ["denoise", "invert"] and listed["state"] == "loaded"


def test_a_task_the_architecture_does_not_implement_is_refused_before_it_runs(toy_client: TestClient) -> None:
    # The card claims reconstruct, which ToyNegative does not implement: a clear 400, never a 500.
    registry = toy_client.app.state.registry  # type: ignore[attr-defined]
    card = registry.entries["toy-negative"].card
    card.tasks.append("reconstruct")
    try:
        response = toy_client.post("/v1/reconstruct?model=toy-negative", files={"image": ("g.png", png(GRADIENT))})
    finally:
        card.tasks.remove("reconstruct")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "task_not_supported"
    assert "Reconstructor" in response.json()["error"]["message"]


# -- each weights file is hashed once at start-up ----------------------------------------------------------


@pytest.mark.parametrize("preload", ["defaults", "all", "none"])
def test_start_up_hashes_each_weights_file_once(
    checkpoints_dir: Path, monkeypatch: pytest.MonkeyPatch, preload: str
) -> None:
    hashed: Counter[Path] = Counter()
    verify = models.checkpoint.verify_weights

    def counting(weights: Path, card: ModelCard, data: bytes | None = None) -> None:
        hashed[Path(weights)] += 1
        verify(weights, card, data)

    monkeypatch.setattr(models.checkpoint, "verify_weights", counting)  # what load_checkpoint calls
    monkeypatch.setattr(app.engine.models.catalogue, "verify_weights", counting)  # what the registry's scan check calls
    with TestClient(create_app(make_settings(checkpoints_dir, preload=preload))) as client:
        registry = client.app.state.registry  # type: ignore[attr-defined]
        with_weights = {
            entry.directory / WEIGHTS_FILE
            for entry in registry.entries.values()
            if entry.card is not None and (entry.directory / WEIGHTS_FILE).is_file()
        }
        states = {name: entry.state for name, entry in registry.entries.items()}
    assert with_weights and set(hashed) == with_weights
    assert set(hashed.values()) == {1}, hashed
    assert states["broken"] == "unavailable"  # its sha256 does not match its card: hashed once, and caught


# -- the layers ------------------------------------------------------------------------------------------


def run_python(code: str) -> None:
    """Run `code` in a fresh interpreter (so that sys.modules shows what importing really loads)."""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_the_service_layer_imports_nothing_of_http() -> None:
    code = (
        "import sys, app.engine.service, app.engine.models.model_choice, app.engine.models.registry\n"
        "import app.engine.requests.jobs\n"
        "web = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette'))\n"
        "assert not web, web"
    )
    run_python(code)


def test_models_import_nothing_of_the_service_and_training_has_no_cycle() -> None:
    code = (
        "import sys, models.training.cli, models.train, models.runtime.tasks\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'app'], 'models imported app'\n"
        "import ast, pathlib\n"
        "for path in pathlib.Path('models/training').rglob('*.py'):\n"
        "    if path.name == 'cli.py': continue\n"
        "    tree = ast.parse(path.read_text())\n"
        "    names = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]\n"
        "    assert not [n for n in names if n in ('models.training.cli', 'models.train')], path\n"
    )
    run_python(code)


def imported_by(folder: str) -> dict[str, set[str]]:
    """Each module under `folder` (sub-folders too) -> the modules it names in its imports, those under
    TYPE_CHECKING too, read from the source (`from package import name` names package.name as well)."""
    found: dict[str, set[str]] = {}
    for path in (REPO_ROOT / folder).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[str(path.relative_to(REPO_ROOT))] = names
    return found


def within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


ENGINE_ABOVE = ("app.engine.service", "app.engine.startup")
HTTP_SCHEMAS = ("app.http.schemas",)
OUTSIDE_THE_ENGINE = ("app.process", "app.oip", "app.main", "app.application", "bench")
# folder -> the packages and modules its modules must not import: each layer only the ones below it.
LAYER_RULES: dict[str, tuple[str, ...]] = {
    "app/engine/scheduling": ("app.engine.models", "app.engine.requests", *ENGINE_ABOVE, "app.http"),
    "app/engine/models": ("app.engine.requests", *ENGINE_ABOVE, "app.http"),
    "app/engine/requests": ENGINE_ABOVE,
    "app/engine": OUTSIDE_THE_ENGINE,
    "app/imaging": ("app.engine", "app.http", *OUTSIDE_THE_ENGINE),
    "models": ("app", "bench"),
    "models/training": ("models.evaluation", "models.train", "models.evaluate"),
    "models/evaluation/mnist": ("models.evaluation.photo", "models.evaluation.reporting"),
    "models/evaluation/photo": ("models.evaluation.mnist", "models.evaluation.reporting"),
}


@pytest.mark.parametrize("folder", sorted(LAYER_RULES))
def test_each_layer_imports_only_the_layers_below_it(folder: str) -> None:
    wrong = {
        module: sorted(name for name in names if within(name, LAYER_RULES[folder]))
        for module, names in imported_by(folder).items()
    }
    assert {module: names for module, names in wrong.items() if names} == {}


def test_the_engine_takes_nothing_of_http_but_its_schemas() -> None:
    # Scheduling and the models layer take nothing of app.http at all (the rules above); the service and the
    # requests' modules describe models in the API's schemas (app.http.schemas, pydantic only).
    wrong = {
        module: sorted(name for name in names if within(name, ("app.http",)) and not within(name, HTTP_SCHEMAS))
        for module, names in imported_by("app/engine").items()
    }
    assert {module: names for module, names in wrong.items() if names} == {}


def test_the_layer_rules_see_the_imports_they_should() -> None:
    assert "app.engine.scheduling.batching" in imported_by("app/engine/models")["app/engine/models/registry.py"]
    assert "app.http.schemas" in imported_by("app/engine/requests")["app/engine/requests/model_info.py"]
    assert within("app.engine.models.registry", ("app.engine.models",))
    assert not within("app.engine.modelsx", ("app.engine.models",))


def test_the_architecture_page_shows_the_task_table_as_it_is() -> None:
    page = (REPO_ROOT / "docs" / "architecture.md").read_text()
    section = page.split("## The task table", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) > 3 and cells[0].startswith("`"):
            keys = tuple(key.strip(" `") for key in cells[2].split(",") if key.strip(" `-"))
            rows[cells[0].strip("`")] = (cells[1].strip("`"), keys)
    assert rows == {name: (task.card_task, default_keys(task)) for name, task in TASKS.items()}
    for task in TASKS.values():
        assert f"`{task.protocol.__name__}." in section, task.name


def test_a_registered_task_lets_cards_list_its_card_task_until_it_is_taken_out() -> None:
    register_task(INVERT)
    try:
        assert "invert" in card_tasks()
    finally:
        unregister_task(INVERT.name)
    assert "invert" not in card_tasks() and "denoise" in card_tasks()


def test_every_default_key_is_a_setting_and_every_setting_a_default_key() -> None:
    from app.engine.models.defaults import DEFAULT_KEYS
    from app.settings import DefaultModels

    assert set(DEFAULT_KEYS) <= set(TASKS)
    assert {key for keys in DEFAULT_KEYS.values() for key in keys} == set(DefaultModels.model_fields)
