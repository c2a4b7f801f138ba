"""Learning curves of the photo models: validation PSNR against cumulative patch passes.

    python -m models.training.curves [--state-dir training-state] [--out docs]

draws `<out>/<name>-learning-curve.png` for every `<state-dir>/<name>/run.json` and prints a Markdown
table of its validation points (models.training.photo.validation says what they measure). The model
report draws the same figure from a served card's `continued_training.validation_curve`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.training.plots import loss_curve

SIGMA_KEYS = ("sigma_15", "sigma_25", "sigma_50")  # a denoiser's points; "mean" beside them
SR_KEYS = ("model", "bicubic")  # a super-resolver's points: Set5 PSNR on Y of the weights and of bicubic


def series_keys(points: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The figures a run's validation points hold: the denoisers' noise levels or the super-resolvers' two."""
    return SIGMA_KEYS if points and "sigma_15" in points[0] else SR_KEYS


def draw_learning_curve(name: str, points: Sequence[dict[str, Any]], path: Path) -> None:
    """One line per noise level (or model and bicubic): PSNR (dB) against thousands of cumulative patch passes."""
    series = [
        (key.replace("_", " "), [(point["patch_passes"] / 1000, float(point[key])) for point in points])
        for key in series_keys(points)
    ]
    loss_curve(series, path, title=f"{name}: validation PSNR (dB) vs thousands of patch passes, cumulative")


def curve_table(points: Sequence[dict[str, Any]]) -> list[str]:
    """A Markdown table of the validation points, first to last."""
    keys = (*SIGMA_KEYS, "mean") if series_keys(points) == SIGMA_KEYS else SR_KEYS
    lines = [
        "| patch passes | minutes | " + " | ".join(key.replace("_", " ") for key in keys) + " |",
        "|---:|---:|" + "---:|" * len(keys),
    ]
    for point in points:
        figures = " | ".join(f"{float(point[key]):.2f}" for key in keys)
        lines.append(f"| {point['patch_passes']:,} | {point['minutes']:.1f} | {figures} |")
    return [*lines, ""]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.training.curves", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", type=Path, default=Path("training-state"))
    parser.add_argument("--out", type=Path, default=Path("docs"))
    arguments = parser.parse_args(argv)
    runs = sorted(arguments.state_dir.glob("*/run.json"))
    if not runs:
        parser.error(f"no {arguments.state_dir}/<name>/run.json")
    for path in runs:
        name = path.parent.name
        points = json.loads(path.read_text())["validation"]
        figure = arguments.out / f"{name}-learning-curve.png"
        draw_learning_curve(name, points, figure)
        print("\n".join([f"{name} ({figure}):", "", *curve_table(points)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
