"""Lint rules for the Dockerfile and .dockerignore (no Docker engine, no hadolint here): the rules that matter."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path

import pytest
from dockerfile_parser import Instruction, env_values, final_stage, parse

from app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE)


@pytest.fixture(scope="module")
def runtime(instructions: list[Instruction]) -> list[Instruction]:
    return final_stage(instructions)


def of(instructions: list[Instruction], keyword: str) -> list[str]:
    return [instruction.arguments for instruction in instructions if instruction.keyword == keyword]


def test_multi_stage_with_pinned_base_images(instructions: list[Instruction]) -> None:
    bases = of(instructions, "FROM")
    assert len(bases) >= 2, "build and runtime stages"
    for base in bases:
        image = base.split()[0]
        tag = image.partition(":")[2]
        assert tag and tag != "latest" and "$" not in image, f"unpinned base image {image!r}"
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{image!r}: pin the full version, not a floating tag"
        assert re.search(r"@sha256:[0-9a-f]{64}$", image), f"{image!r}: pin the digest too (a tag can be moved)"
    assert any("--from=build" in copy for copy in of(final_stage(instructions), "COPY"))


def test_runs_as_a_non_root_user(runtime: list[Instruction]) -> None:
    users = of(runtime, "USER")
    assert users, "the runtime stage sets a USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    keywords = [instruction.keyword for instruction in runtime]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT"), "USER before the entry point"


def test_healthcheck_calls_healthz_with_python(runtime: list[Instruction]) -> None:
    (healthcheck,) = of(runtime, "HEALTHCHECK")
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert command[0] == "python", "the slim image has no curl or wget"
    assert "/healthz" in command[2]


def test_no_remote_add_and_pip_without_cache(instructions: list[Instruction]) -> None:
    for added in of(instructions, "ADD"):
        assert not re.search(r"https?://", added), "ADD of a URL: fetch it in a RUN with a checksum instead"
    pip_runs = [run for run in of(instructions, "RUN") if "pip install" in run]
    assert pip_runs
    for run in pip_runs:
        assert "--no-cache-dir" in run, run
        assert "-c deploy/constraints.txt" in run, f"install with the pinned versions: {run}"


def test_torch_is_pinned_and_cuda_is_a_build_argument(instructions: list[Instruction]) -> None:
    (torch_install,) = [run for run in of(instructions, "RUN") if "torch==" in run]
    assert re.search(r"torch==\d+\.\d+\.\d+", torch_install)
    assert "download.pytorch.org/whl/cpu" in torch_install, "the CPU index is the default"
    assert any(arg.startswith("TORCH_VARIANT=") for arg in of(instructions, "ARG"))


def test_checkpoints_baked_in_where_the_settings_point(runtime: list[Instruction]) -> None:
    env = env_values(runtime)
    copies = [shlex.split(copy) for copy in of(runtime, "COPY")]
    assert ["checkpoints", env["AE_CHECKPOINTS_DIR"]] in copies


def test_served_on_all_interfaces_on_the_exposed_port(runtime: list[Instruction]) -> None:
    env = env_values(runtime)
    assert env["AE_HOST"] == "0.0.0.0"
    assert of(runtime, "EXPOSE") == [env["AE_PORT"]]
    assert json.loads(of(runtime, "ENTRYPOINT")[0]) == ["ae"]
    assert json.loads(of(runtime, "CMD")[0]) == ["serve"]


def test_every_ae_variable_is_a_setting(runtime: list[Instruction]) -> None:
    fields = {f"AE_{name.upper()}" for name in Settings.model_fields}
    for key in env_values(runtime):
        if key.startswith("AE_"):
            assert key in fields, f"{key} is not a Settings field"


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path (or one of its parents) decides."""
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        glob = glob[3:] if glob.startswith("**/") else glob
        if any(fnmatch.fnmatch(candidate, glob) or fnmatch.fnmatch(parts[-1], glob) for candidate in candidates):
            excluded = not negate
    return excluded


def test_every_copied_path_exists_and_is_in_the_build_context(instructions: list[Instruction]) -> None:
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for copy in of(instructions, "COPY"):
        words = [word for word in shlex.split(copy) if not word.startswith("--")]
        if "--from=" in copy:
            continue
        for source in words[:-1]:
            assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not dockerignore_excludes(source, patterns), f"COPY {source}: excluded by .dockerignore"
    assert dockerignore_excludes("tests/app/conftest.py", patterns)
    assert dockerignore_excludes("app/__pycache__/main.cpython-311.pyc", patterns)
    assert dockerignore_excludes(".git", patterns)
