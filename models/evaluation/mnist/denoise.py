"""Denoising: the model against the noisy input, a 3x3 median filter, a Gaussian blur and BM3D.

All methods see the same noisy test images: zero-mean Gaussian noise, clipped to [0, 1], one seeded
standard-normal draw scaled by each sigma. BM3D is slow, so it runs on a seeded subset of the test
digits, and every other method is scored on that subset too so the comparison stays like for like.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from models.checkpoint import Checkpoint
from models.data.corruptions import gaussian_noise
from models.evaluation.context import EvaluationContext, model_method, quality
from models.evaluation.mnist.figures import save_labelled_rows
from models.quality.baselines import best_gaussian_sigma, bm3d_denoise, gaussian_blur, median_filter

TARGET_SIGMA = 0.5
TARGET_MARGIN_DB = 4.0  # the model must beat the best classical baseline by this much PSNR
EXAMPLE_DIGITS = 10  # the first test digits, shown side by side in the report


def noisy_test_images(context: EvaluationContext, sigma: float) -> torch.Tensor:
    """The noisy versions of all test digits at `sigma` (the same for every model and baseline)."""

    def corrupt() -> torch.Tensor:
        return gaussian_noise(context.test.images, sigma, clip=True, seed=context.settings.noise_seed)

    return context.cached(f"noisy-{sigma}", corrupt)


def bm3d_subset(context: EvaluationContext) -> torch.Tensor:
    settings = context.settings
    return context.seeded_subset(len(context.test.images), settings.bm3d_subset_size, settings.subset_seed)


def tuned_blur_sigma(context: EvaluationContext, noise_sigma: float) -> float:
    """Choose the blur's sigma on noisy *training* digits, so the test set never tunes a baseline."""
    settings = context.settings
    indices = context.seeded_subset(len(context.train.images), settings.blur_tuning_images, settings.blur_tuning_seed)
    clean = context.train.images[indices]
    noisy = gaussian_noise(clean, noise_sigma, clip=True, seed=settings.blur_tuning_seed)
    return best_gaussian_sigma(clean, noisy, settings.blur_sigma_candidates)


def classical_baselines(context: EvaluationContext, sigma: float) -> dict[str, Any]:
    """Scores of the classical methods at one noise level, on the test set and on the BM3D subset."""

    def measure() -> dict[str, Any]:
        settings = context.settings
        clean, noisy = context.test.images, noisy_test_images(context, sigma)
        blur_sigma = tuned_blur_sigma(context, sigma)
        outputs = {
            "noisy input": noisy,
            "median 3x3": median_filter(noisy, 3),
            "gaussian blur": gaussian_blur(noisy, blur_sigma),
        }
        subset = bm3d_subset(context)
        return {
            "gaussian_blur_sigma": blur_sigma,
            "test_set": {name: quality(output, clean) for name, output in outputs.items()},
            "bm3d_subset": {
                **{name: quality(output[subset], clean[subset]) for name, output in outputs.items()},
                "bm3d": quality(bm3d_denoise(noisy[subset], sigma, settings.bm3d_workers), clean[subset]),
            },
        }

    return context.cached(f"denoise-baselines-{sigma}", measure)


def denoising_target(scores: dict[str, Any]) -> dict[str, Any]:
    """The model's smallest PSNR margin over any classical baseline at TARGET_SIGMA.

    Each baseline is compared on the largest set it was measured on: the whole test set, or the
    BM3D subset for BM3D.
    """
    test_set, subset = scores["test_set"]["scores"], scores["bm3d_subset"]["scores"]
    margins = {name: test_set["model"]["psnr"] - score["psnr"] for name, score in test_set.items() if name != "model"}
    margins["bm3d"] = subset["model"]["psnr"] - subset["bm3d"]["psnr"]
    closest = min(margins, key=lambda name: margins[name])
    return {
        "description": f"at sigma {TARGET_SIGMA}, beat the best classical baseline by >= {TARGET_MARGIN_DB} dB PSNR",
        "sigma": TARGET_SIGMA,
        "required_margin_db": TARGET_MARGIN_DB,
        "best_baseline": closest,
        "margin_db": round(margins[closest], 3),
        "met": bool(margins[closest] >= TARGET_MARGIN_DB),
    }


def evaluate_denoising(checkpoint: Checkpoint, context: EvaluationContext) -> dict[str, Any]:
    settings = context.settings
    clean = context.test.images
    subset = bm3d_subset(context)
    by_sigma: dict[str, Any] = {}
    denoise = model_method(checkpoint, "denoise")
    for sigma in settings.noise_sigmas:
        baselines = classical_baselines(context, sigma)
        denoised = context.batched(denoise, noisy_test_images(context, sigma))  # (N, 1, 28, 28)
        by_sigma[str(sigma)] = {
            "gaussian_blur_sigma": baselines["gaussian_blur_sigma"],
            "test_set": {
                "images": len(clean),
                "scores": {"model": quality(denoised, clean), **baselines["test_set"]},
            },
            "bm3d_subset": {
                "images": len(subset),
                "scores": {"model": quality(denoised[subset], clean[subset]), **baselines["bm3d_subset"]},
            },
        }
    result: dict[str, Any] = {
        "protocol": (
            f"MNIST test set; noisy = clip(clean + sigma * N(0, 1), 0, 1) with noise seed {settings.noise_seed}; "
            f"BM3D (told sigma) on {settings.bm3d_subset_size} test digits chosen by seed {settings.subset_seed}, "
            "every method also scored on that subset; Gaussian blur sigma chosen from "
            f"{list(settings.blur_sigma_candidates)} on {settings.blur_tuning_images} noisy training digits; "
            "PSNR and SSIM are means over images"
        ),
        "noise": by_sigma,
    }
    if str(TARGET_SIGMA) in by_sigma:
        result["target"] = denoising_target(by_sigma[str(TARGET_SIGMA)])
    result["figures"] = {
        "examples": str(draw_examples(checkpoint.card.name, context, denoise, max(settings.noise_sigmas)))
    }
    return result


def draw_examples(
    name: str, context: EvaluationContext, denoise: Callable[[torch.Tensor], torch.Tensor], sigma: float
) -> Path:
    """The first test digits: clean, noisy, each classical method and the model, one row each."""
    clean = context.test.images[:EXAMPLE_DIGITS]
    noisy = noisy_test_images(context, sigma)[:EXAMPLE_DIGITS]
    blur_sigma = classical_baselines(context, sigma)["gaussian_blur_sigma"]
    with torch.no_grad():
        model_output = denoise(noisy.to(context.device)).cpu()
    rows = [
        ("clean", clean),
        (f"noisy ({sigma})", noisy),
        ("median 3x3", median_filter(noisy, 3)),
        (f"blur ({blur_sigma})", gaussian_blur(noisy, blur_sigma)),
        ("bm3d", bm3d_denoise(noisy, sigma)),
        (name, model_output),
    ]
    context.figures_dir.mkdir(parents=True, exist_ok=True)
    return save_labelled_rows(rows, context.figures_dir / f"{name}-examples.png")
