"""Settings from AE_* variables, device and dtype resolution, and the ae-serve command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from app.engine.models.loading import check_precision, resolve_device
from app.process import cli
from app.process.connections import GuardedHttpToolsProtocol
from app.process.server import uvicorn_config
from app.settings import Settings

INVALID_SETTINGS = [("AE_DEVICE", "tpu"), ("AE_PRECISION", "int8"), ("AE_COMPILE", "maybe"), ("AE_MAX_PIXELS", "0")]


def test_settings_come_from_ae_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AE_CHECKPOINTS_DIR", str(tmp_path))
    monkeypatch.setenv("AE_DEFAULT_MODELS", '{"denoise": "my-denoiser"}')
    monkeypatch.setenv("AE_PRELOAD", '["a", "b"]')
    monkeypatch.setenv("AE_MAX_SAMPLES", "7")
    settings = Settings()
    assert settings.checkpoints_dir == tmp_path and settings.max_samples == 7
    assert settings.default_models.denoise == "my-denoiser"
    assert settings.default_models.vae == "mnist-vae"  # tasks left out keep their defaults
    assert settings.preload == ["a", "b"]


def test_one_default_model_can_be_set_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AE_DEFAULT_MODELS__SUPER_RESOLVE", "mnist-sr-x4")
    settings = Settings()
    assert settings.default_models.super_resolve == "mnist-sr-x4" and settings.default_models.denoise == "mnist-denoise"


@pytest.mark.parametrize(("name", "value"), INVALID_SETTINGS)
def test_invalid_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_device_and_dtype_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")
    check_precision("float32", torch.device("cpu"))  # every device runs float32
    check_precision("auto", torch.device("cpu"))  # auto falls back to float32 where nothing else is native


def test_ae_serve_runs_uvicorn_with_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(cli, "run_server", lambda settings, **kwargs: calls.append({"settings": settings, **kwargs}))
    monkeypatch.setattr(cli, "settings_from_environment", lambda: Settings(port=9123, workers=2, host="0.0.0.0"))
    cli.serve([])
    cli.serve(["--port", "9999"])
    assert {key: calls[0][key] for key in ("host", "port", "workers")} == {
        "host": "0.0.0.0",
        "port": 9123,
        "workers": 2,
    }
    assert calls[1]["port"] == 9999


def test_ae_serve_configures_uvicorn_with_the_guarded_protocol_and_the_settings() -> None:
    settings = Settings(keep_alive_s=17, body_timeout_s=40, batch_timeout_s=20, log_level="warning")
    config = uvicorn_config(settings, host="0.0.0.0", port=9123, workers=2)
    assert config.app == "app.main:app" and (config.host, config.port, config.workers) == ("0.0.0.0", 9123, 2)
    assert config.http is GuardedHttpToolsProtocol  # header/body deadlines, the connection cap
    assert config.timeout_keep_alive == 17
    # uvicorn waits for the requests it has read at most as long as the longest one may take
    assert config.timeout_graceful_shutdown is not None and config.timeout_graceful_shutdown >= 40 + 20
    assert config.access_log is False and config.log_level == "warning"
