"""deploy/constraints.txt pins every runtime dependency (constraints-dev.txt the test toolchain), and the
Dockerfile's pip commands resolve against them.

No network here, so the Dockerfile's install commands run as `pip install --dry-run --no-index` against this
environment: they succeed only if the constraints, the project's requirements and what the tests run on agree.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from dockerfile_parser import parse
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "deploy"))
from pin_runtime import DEV_OUTPUT, OUTPUT, PROJECT, RAY_OUTPUT, closure  # noqa: E402


def pins(path: Path = OUTPUT) -> dict[str, str]:
    lines = path.read_text().splitlines()
    found = [re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", line) for line in lines if line and not line.startswith("#")]
    assert all(found), "every line is NAME==VERSION"
    return {canonicalize_name(match.group(1)): match.group(2) for match in found if match}


def test_every_runtime_dependency_of_pyproject_is_pinned_within_its_range() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pinned = pins()
    for text in project["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not pinned in deploy/constraints.txt"
        assert requirement.specifier.contains(pinned[name]), f"{name}=={pinned[name]} is outside {requirement}"


def test_constraints_match_the_environment_the_tests_run_in() -> None:
    assert pins() == closure(PROJECT), "rerun `python deploy/pin_runtime.py`"
    development = {**pins(), **pins(DEV_OUTPUT)}
    assert development == closure(PROJECT, frozenset({"dev"})), "rerun `python deploy/pin_runtime.py`"
    assert "pytest" in development and "schemathesis" in development and "scipy" in development
    with_ray = {**pins(), **pins(RAY_OUTPUT)}
    assert with_ray == closure(PROJECT, frozenset({"ray"})), "rerun `python deploy/pin_runtime.py`"
    shared = set(pins(RAY_OUTPUT)) & set(pins(DEV_OUTPUT))
    assert {name: pins(RAY_OUTPUT)[name] for name in shared} == {name: pins(DEV_OUTPUT)[name] for name in shared}


def test_ci_installs_the_ray_extra_at_its_pinned_versions_and_requires_its_tests() -> None:
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert '-c deploy/constraints.txt -c deploy/constraints-dev.txt -c deploy/constraints-ray.txt -e ".[ray]"' in ci
    assert "export AE_TESTS_REQUIRE_RAY=1" in ci


def test_ci_requires_the_browser_and_the_data_sets_instead_of_skipping_without_them() -> None:
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "export AE_TESTS_REQUIRE_BROWSER=1" in ci and "export AE_TESTS_REQUIRE_DATA=1" in ci
    assert "apt-get install" in ci and "chromium" in ci  # and it installs the browser it requires


def test_ci_and_the_readme_install_the_test_toolchain_at_its_pinned_versions() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    pinned_install = '-c deploy/constraints.txt -c deploy/constraints-dev.txt -e ".[dev]"'
    assert pinned_install in readme
    assert pinned_install in ci


def dockerfile_pip_installs() -> list[list[str]]:
    """The pip install commands of the Dockerfile as argument lists, ARG defaults filled in."""
    commands = []
    for instruction in parse(REPO_ROOT / "Dockerfile"):
        if instruction.keyword == "RUN" and "pip install" in instruction.arguments:
            words = shlex.split(instruction.arguments)
            commands.append(words[words.index("pip") :])
    return commands


def offline(command: list[str]) -> list[str]:
    """The same install without the network: package indexes dropped, nothing written but a dry-run report."""
    kept: list[str] = []
    skip_next = False
    for word in command[2:]:  # after `pip install`
        if skip_next:
            skip_next = False
        elif word in ("--index-url", "--extra-index-url"):
            skip_next = True
        else:
            kept.append(word)
    return [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation", "-q", *kept]


@pytest.mark.parametrize("command", dockerfile_pip_installs(), ids=lambda command: command[-1])
def test_dockerfile_pip_install_resolves_with_the_pinned_versions(command: list[str]) -> None:
    result = subprocess.run(offline(command), cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
