"""The shipped checkpoints and the data sets beside the clone, for the tests that use them.

A shipped checkpoint that is missing is a failure, not a skip: a renamed or deleted folder must not
silently turn its tests off. The data sets (`../shared/datasets`, or AE_DATASETS_DIR) are not in the
repository: without them the tests that read them skip with the reason, except under CI, where
`AE_TESTS_REQUIRE_DATA=1` (set by .ci/run) turns the skip into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from models.checkpoint import read_card

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = Path(os.environ.get("AE_REAL_CHECKPOINTS_DIR", REPO_ROOT / "checkpoints"))
DATASETS = Path(os.environ.get("AE_DATASETS_DIR", REPO_ROOT.parent / "shared" / "datasets"))
REQUIRE_DATA_VARIABLE = "AE_TESTS_REQUIRE_DATA"

# The super-resolution models of photographs held to their cards' Set5 figures when served (FSRCNN-style
# t91-sr-x2 and the residual photo-sr models of docs/photo-training.md).
SHIPPED_PHOTO_SUPER_RESOLUTION = ("t91-sr-x2", "photo-sr-x2", "photo-sr-x3", "photo-sr-x4")

# Every checkpoint the repository ships (docs/api.md lists what each does).
SHIPPED = (
    "mnist-denoise",
    "mnist-ae",
    "mnist-vae",
    "mnist-vae-2d",
    "mnist-cvae",
    "mnist-classifier",
    "mnist-sr-x2",
    "mnist-sr-x4",
    "bsd-denoise-sigma15",
    "bsd-denoise-sigma25",
    "bsd-denoise-sigma50",
    "photo-denoise-gray",
    "photo-denoise-color",
    "t91-sr-x3",
    "t91-sr-x4",
    *SHIPPED_PHOTO_SUPER_RESOLUTION,
)


def require_shipped(*names: str) -> None:
    missing = [name for name in names if not (CHECKPOINTS / name / "model.safetensors").is_file()]
    if missing:
        pytest.fail(f"shipped checkpoints missing from {CHECKPOINTS}: {', '.join(missing)}")


def require_data(*folders: str) -> Path:
    """The data sets folder, holding these sub-folders; a skip (a failure under CI) when it does not."""
    missing = [folder for folder in folders if not (DATASETS / folder).is_dir()]
    if missing:
        reason = f"the data sets {', '.join(missing)} are not in {DATASETS} (set AE_DATASETS_DIR)"
        if os.environ.get(REQUIRE_DATA_VARIABLE) == "1":
            pytest.fail(f"{reason}; {REQUIRE_DATA_VARIABLE}=1 requires them")
        pytest.skip(reason)
    return DATASETS


def card_metrics(name: str) -> dict[str, Any]:
    """The figures the evaluation wrote into a shipped card (`python -m models.evaluate`)."""
    require_shipped(name)
    return dict(read_card(CHECKPOINTS / name).metrics)


def card_serving(name: str) -> dict[str, Any]:
    require_shipped(name)
    return dict(read_card(CHECKPOINTS / name).serving or {})
