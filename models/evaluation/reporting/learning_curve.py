"""The model report's section on a continued photo model's learning curve (models.training.curves draws it)."""

from __future__ import annotations

import os
from pathlib import Path

from models.checkpoint import ModelCard
from models.training.curves import curve_table, draw_learning_curve

VALIDATION_DESCRIPTION = (
    "the first 12 images of BSD68 (gray) or CBSD68 (colour), central 256x256 crops, sigma 15/25/50, "
    "8-bit clipped noisy input, noise seeded 0"
)


def render_learning_curve(card: ModelCard, report_dir: Path) -> list[str]:
    """A continued photo model's validation curve (models.training.curves), when its card carries one."""
    points = card.training.get("continued_training", {}).get("validation_curve", [])
    if not points:
        return []
    figure = report_dir / f"{card.name}-learning-curve.png"
    draw_learning_curve(card.name, points, figure)
    caption = (
        f"{card.name}: validation PSNR against cumulative patch passes ({VALIDATION_DESCRIPTION}); "
        "the first point is the checkpoint the continued training started from"
    )
    return [
        "Learning curve (continued training):",
        "",
        *curve_table(points),
        f"![{caption}]({os.path.relpath(figure, report_dir)})",
        "",
        f"*{caption}.*",
        "",
    ]
