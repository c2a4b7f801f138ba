"""Super-resolution: the model against nearest-neighbour and bicubic upscaling.

The low-resolution inputs are the test digits area-downscaled (box filter) by the model's scale,
the same degradation the models are trained on.
"""

from __future__ import annotations

from typing import Any

from models.checkpoint import Checkpoint
from models.data.corruptions import downscale
from models.evaluation.context import EvaluationContext, model_method, quality
from models.evaluation.mnist.figures import save_labelled_rows
from models.quality.baselines import bicubic_upscale, nearest_upscale

# PSNR the model must gain over bicubic upscaling, per scale.
TARGET_MARGIN_OVER_BICUBIC_DB = {2: 2.0, 4: 1.5}


def evaluate_super_resolution(checkpoint: Checkpoint, context: EvaluationContext) -> dict[str, Any]:
    if not checkpoint.card.scale:
        raise ValueError(f"{checkpoint.card.name}: a super-resolve card needs a scale")
    scale = int(checkpoint.card.scale)
    clean = context.test.images  # (N, 1, 28, 28)
    small = downscale(clean, scale, method="area")  # (N, 1, 28 / scale, 28 / scale)
    upscaled = context.batched(model_method(checkpoint, "super_resolve"), small)  # (N, 1, 28, 28)
    scores = {
        "model": quality(upscaled, clean),
        "nearest": context.cached(f"sr-nearest-{scale}", lambda: quality(nearest_upscale(small, scale), clean)),
        "bicubic": context.cached(f"sr-bicubic-{scale}", lambda: quality(bicubic_upscale(small, scale), clean)),
    }
    result: dict[str, Any] = {
        "protocol": (
            f"MNIST test set; inputs area-downscaled x{scale}; bicubic and nearest upscaling by torch "
            "(align_corners=False, clipped to [0, 1]); PSNR and SSIM are means over images"
        ),
        "scale": scale,
        "images": len(clean),
        "scores": scores,
    }
    examples = slice(0, 10)  # the first test digits, shown side by side in the report
    rows = [
        ("clean", clean[examples]),
        (f"input (1/{scale})", nearest_upscale(small[examples], scale)),
        ("bicubic", bicubic_upscale(small[examples], scale)),
        (checkpoint.card.name, upscaled[examples]),
    ]
    context.figures_dir.mkdir(parents=True, exist_ok=True)
    path = save_labelled_rows(rows, context.figures_dir / f"{checkpoint.card.name}-examples.png")
    result["figures"] = {"examples": str(path)}
    if scale in TARGET_MARGIN_OVER_BICUBIC_DB:
        required = TARGET_MARGIN_OVER_BICUBIC_DB[scale]
        margin = scores["model"]["psnr"] - scores["bicubic"]["psnr"]
        result["target"] = {
            "description": f"beat bicubic upscaling by >= {required} dB PSNR at x{scale}",
            "required_margin_db": required,
            "best_baseline": "bicubic",
            "margin_db": round(margin, 3),
            "met": bool(margin >= required),
        }
    return result
