"""The scale-out tests: Ray Serve on this machine, against the service tests' tiny checkpoints and real server.

They need the `ray` extra (`pip install -e ".[ray]"`) and take a minute or two: a developer skips them with
`pytest -m "not ray"`, and they skip themselves where Ray is not installed, except in CI, where
AE_TESTS_REQUIRE_RAY=1 (set by .ci/run) turns a missing Ray into a failure instead of a silent skip.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

SERVICE_TESTS = Path(__file__).resolve().parents[1] / "app"
sys.path.insert(0, str(SERVICE_TESTS))  # drawn_digits, tiny_checkpoints, service_helpers

_spec = importlib.util.spec_from_file_location("service_tests_conftest_scaleout", SERVICE_TESTS / "conftest.py")
assert _spec is not None and _spec.loader is not None
service_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(service_tests)

checkpoints_dir = service_tests.checkpoints_dir  # session fixture: tiny checkpoints in a temporary folder
server = service_tests.server  # session fixture: `python -m uvicorn app.main:app` on a free port; its URL


@pytest.fixture(scope="session")
def serve_checkpoints() -> Callable[..., AbstractContextManager[str]]:
    """Start the plain service on another folder: `with serve_checkpoints(folder, default_models) as url:`."""
    running_server: Callable[..., AbstractContextManager[str]] = service_tests.running_server
    return running_server
