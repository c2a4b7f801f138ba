"""The client tests run against the service tests' real uvicorn server: its fixtures are imported, not copied."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

SERVICE_TESTS = Path(__file__).resolve().parents[1] / "app"
sys.path.insert(0, str(SERVICE_TESTS))  # drawn_digits, tiny_checkpoints, service_helpers

# tests/app/conftest.py under its own module name, so it does not clash with this conftest module.
_spec = importlib.util.spec_from_file_location("service_tests_conftest", SERVICE_TESTS / "conftest.py")
assert _spec is not None and _spec.loader is not None
service_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(service_tests)

checkpoints_dir = service_tests.checkpoints_dir  # session fixture: tiny checkpoints in a temporary folder
server = service_tests.server  # session fixture: `python -m uvicorn app.main:app` on a free port; its URL


@pytest.fixture(scope="session")
def serve_checkpoints() -> Callable[..., AbstractContextManager[str]]:
    """Start the real service on another folder: `with serve_checkpoints(folder, default_models) as url:`."""
    running_server: Callable[..., AbstractContextManager[str]] = service_tests.running_server
    return running_server
