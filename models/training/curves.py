"""Learning curves of the photo models: validation PSNR against cumulative patch passes.

    python -m models.training.curves [--state-dir training-state] [--out docs]
        [--needs photo-denoise-color:sigma_25:0.56 ...]

draws `<out>/<name>-learning-curve.png` for every `<state-dir>/<name>/run.json` and prints a Markdown
table of its validation points (models.training.photo.validation says what they measure). The model
report draws the same figure from a served card's `continued_training.validation_curve`.

Where the curve goes: each figure is fitted by least squares as a line against log2(patch passes) over the
later half of the run (the points from half the latest cumulative patch passes on), which gives the
decibels one more doubling of patch passes adds; `--needs NAME:KEY:DB` says how many cumulative patch
passes that line reaches DB dB above the latest point at (an extrapolation: curves usually flatten).
"""

from __future__ import annotations

import argparse
import json
import math
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


def doubling_fit(points: Sequence[dict[str, Any]], key: str) -> tuple[float, float] | None:
    """-> (dB per doubling of patch passes, dB at one patch pass) of the line through the later half of the
    run in log2(patch passes); None with fewer than 3 such points or a single patch-pass count."""
    later = [point for point in points if point["patch_passes"] >= points[-1]["patch_passes"] / 2]
    xs = [math.log2(point["patch_passes"]) for point in later if point["patch_passes"] > 0]
    ys = [float(point[key]) for point in later if point["patch_passes"] > 0]
    if len(xs) < 3 or max(xs) == min(xs):
        return None
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)
    return slope, mean_y - slope * mean_x


def passes_for_gain(points: Sequence[dict[str, Any]], key: str, gain_db: float) -> int | None:
    """Cumulative patch passes at which the fitted line stands `gain_db` above the latest point; None where
    the curve is flat or falling."""
    fit = doubling_fit(points, key)
    if fit is None or fit[0] <= 0:
        return None
    slope, intercept = fit
    return round(2 ** ((float(points[-1][key]) + gain_db - intercept) / slope))


def extrapolation_lines(points: Sequence[dict[str, Any]], needs: Sequence[tuple[str, float]]) -> list[str]:
    """What one more doubling adds to each figure, and where each of `needs` (key, dB) would be reached."""
    slopes = []
    for key in series_keys(points):
        fit = doubling_fit(points, key)
        if fit is not None:
            slopes.append(f"{key.replace('_', ' ')} {fit[0]:+.3f} dB")
    lines = [f"Per doubling of patch passes (later half of the run): {', '.join(slopes) or 'too few points'}."]
    for key, gain in needs:
        reached = passes_for_gain(points, key, gain)
        where = f"~{reached:,} patch passes" if reached else "never on this curve (flat or falling)"
        lines.append(f"+{gain:g} dB of {key.replace('_', ' ')} beyond the latest point: {where}.")
    return [*lines, ""]


def need_argument(text: str) -> tuple[str, str, float]:
    """`NAME:KEY:DB` -> (name, key, dB)."""
    try:
        name, key, gain = text.split(":")
        return name, key, float(gain)
    except ValueError:
        message = f"expected NAME:KEY:DB, e.g. photo-denoise-color:sigma_25:0.56, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.training.curves", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", type=Path, default=Path("training-state"))
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument(
        "--needs",
        type=need_argument,
        action="append",
        default=[],
        metavar="NAME:KEY:DB",
        help="where the fitted curve of NAME's KEY (sigma_25, model, ...) gains DB dB more (repeatable)",
    )
    arguments = parser.parse_args(argv)
    runs = sorted(arguments.state_dir.glob("*/run.json"))
    if not runs:
        parser.error(f"no {arguments.state_dir}/<name>/run.json")
    for path in runs:
        name = path.parent.name
        points = json.loads(path.read_text())["validation"]
        figure = arguments.out / f"{name}-learning-curve.png"
        draw_learning_curve(name, points, figure)
        needs = [(key, gain) for wanted, key, gain in arguments.needs if wanted == name]
        print("\n".join([f"{name} ({figure}):", "", *curve_table(points), *extrapolation_lines(points, needs)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
