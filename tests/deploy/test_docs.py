"""The settings are documented once (docs/api.md's table) and the deployment guide names only real ones."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings import Settings
from models.architectures import ARCHITECTURES

REPO_ROOT = Path(__file__).resolve().parents[2]
SETTINGS_VARIABLES = {f"AE_{name.upper()}" for name in Settings.model_fields}
# Read by the client and the command line, not by the service; `AE_GPU_PORT` and `AE_BIND_ADDRESS` are compose's own.
CLIENT_AND_COMPOSE_VARIABLES = {"AE_URL", "AE_API_KEY", "AE_GPU_PORT", "AE_BIND_ADDRESS"}


def settings_table_variables(markdown: str) -> set[str]:
    """The AE_* names in the first column of the table under '### Settings'."""
    section = markdown.split("### Settings", 1)[1]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("## "):
            break
        if line.startswith("| `AE_"):
            names.update(re.findall(r"`(AE_[A-Z0-9_]+)`", line.split("|")[1]))
    return names


def test_the_settings_table_lists_every_setting_and_nothing_else() -> None:
    documented = settings_table_variables((REPO_ROOT / "docs" / "api.md").read_text())
    assert documented - SETTINGS_VARIABLES == set(), "documented but not a setting"
    assert SETTINGS_VARIABLES - documented == set(), "a setting missing from docs/api.md's table"


def test_the_deployment_guide_names_only_real_variables_and_architectures() -> None:
    guide = (REPO_ROOT / "docs" / "deployment.md").read_text()
    for name in set(re.findall(r"AE_[A-Z0-9_]+", guide)):
        base = name.split("__")[0]  # AE_DEFAULT_MODELS__EMBED sets one field of AE_DEFAULT_MODELS
        assert base in SETTINGS_VARIABLES | CLIENT_AND_COMPOSE_VARIABLES, name
    named = set(re.findall(r"`([a-z0-9]+(?:-[a-z0-9]+)*)`", guide.split("## Adding your own checkpoint", 1)[1]))
    assert set(ARCHITECTURES) <= named, "every architecture is named where checkpoints are explained"
