"""The code stays lint-clean and type-checked, and nothing deserialises untrusted data with pickle."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["app", "models", "bench", "aeclient", "deploy", "ae_ray"]

# Calls that can run code hidden in data: unpickling (torch.load, pickle, numpy with pickles) and eval/exec.
UNSAFE_CALLS = re.compile(
    r"(?<![\w.])torch\.load\s*\(|\bpickle\.loads?\s*\(|\bimport pickle\b|\bcloudpickle\b|\bdill\b"
    r"|allow_pickle\s*=\s*True|(?<![\w.])eval\s*\(|(?<![\w.])exec\s*\("
)


def python_sources() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (REPO_ROOT / package).rglob("*.py"))


def test_no_code_path_unpickles_or_evaluates_data() -> None:
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for path in python_sources()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if UNSAFE_CALLS.search(line) and not line.lstrip().startswith("#")
    ]
    assert not offenders, "\n".join(offenders)


def test_the_unsafe_call_pattern_catches_what_it_should() -> None:
    for line in ("state = torch.load(path)", "obj = pickle.loads(b)", "eval(text)", "np.load(p, allow_pickle=True)"):
        assert UNSAFE_CALLS.search(line), line
    for line in ("model.eval()", "self.evaluate(x)", "torch.load_state_dict", "safetensors.torch.load(data)"):
        assert not UNSAFE_CALLS.search(line), line


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
def test_ruff_is_clean() -> None:
    result = subprocess.run(["ruff", "check", "."], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-4000:]


def test_mypy_is_clean() -> None:
    pytest.importorskip("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", *PACKAGES], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-4000:]
