"""What the service's start-up leaves behind for the request path."""

from __future__ import annotations

import gc
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

import app.engine.models.loading as loading_module
import app.engine.startup as startup_module
from app.engine.models.registry import ModelRegistry
from app.engine.startup import torch_threads
from app.settings import Settings
from models.runtime.execution import ExecutionError


def test_start_up_freezes_what_it_built_out_of_the_garbage_collectors_sight(
    make_client: Callable[..., TestClient],
) -> None:
    gc.unfreeze()  # what earlier start-ups in this session froze goes back: this start-up must freeze its own
    assert gc.get_freeze_count() == 0
    client = make_client()
    assert client.get("/readyz").status_code == 200
    assert gc.get_freeze_count() > 0
    registry = client.app.state.registry  # type: ignore[attr-defined]
    # gc.get_objects() lists the three generations the collector walks; frozen objects are in none of them.
    assert not any(tracked is registry for tracked in gc.get_objects())
    assert gc.is_tracked(registry)  # tracked, so only the freeze can have hidden it


def test_a_precision_the_hardware_cannot_run_stops_start_up_naming_the_setting(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loading_module, "native_precisions", lambda device: ("float32",))
    with pytest.raises(ExecutionError, match=r"AE_PRECISION=bfloat16.*use AE_PRECISION=auto or float32"):
        ModelRegistry(settings.model_copy(update={"precision": "bfloat16"}))
    ModelRegistry(settings.model_copy(update={"precision": "float32"}))  # always runs


def test_torch_threads_default_to_the_cores_this_process_may_use_shared_among_workers(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(startup_module, "available_cpus", lambda: 8)
    assert torch_threads(settings.model_copy(update={"torch_threads": None})) == 8
    assert torch_threads(settings.model_copy(update={"torch_threads": None, "workers": 3})) == 2
    assert torch_threads(settings.model_copy(update={"torch_threads": 5, "workers": 3})) == 5
