"""What the service's start-up leaves behind for the request path."""

from __future__ import annotations

import gc

import pytest
from fastapi.testclient import TestClient

import app.engine.registry as registry_module
import app.main as main_module
from app.engine.registry import ModelRegistry
from app.main import torch_threads
from app.settings import Settings
from models.runtime.execution import ExecutionError


def test_start_up_freezes_what_it_built_out_of_the_garbage_collectors_sight(client: TestClient) -> None:
    # The session's app has started (the fixture ran its lifespan): the models and the rest are frozen.
    assert client.get("/readyz").status_code == 200
    assert gc.get_freeze_count() > 0


def test_a_precision_the_hardware_cannot_run_stops_start_up_naming_the_setting(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "native_precisions", lambda device: ("float32",))
    with pytest.raises(ExecutionError, match=r"AE_PRECISION=bfloat16.*use AE_PRECISION=auto or float32"):
        ModelRegistry(settings.model_copy(update={"precision": "bfloat16"}))
    ModelRegistry(settings.model_copy(update={"precision": "float32"}))  # always runs


def test_torch_threads_default_to_the_cores_this_process_may_use_shared_among_workers(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(main_module, "available_cpus", lambda: 8)
    assert torch_threads(settings.model_copy(update={"torch_threads": None})) == 8
    assert torch_threads(settings.model_copy(update={"torch_threads": None, "workers": 3})) == 2
    assert torch_threads(settings.model_copy(update={"torch_threads": 5, "workers": 3})) == 5
