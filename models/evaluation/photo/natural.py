"""Natural-image denoising and super-resolution, measured with the literature's protocols.

The protocols are those of `../shared/datasets/README.md`, implemented in `models.data.natural_images`:
- denoising: BSD68 and Set12, clean/255 + (sigma/255) N(0, 1) from one generator seeded 0 and drawn
  image after image in name order, the noisy input not clipped, the output rounded to uint8, PSNR with
  no border cropped; BM3D (the `bm3d` package, told sigma) on the first `natural_bm3d_images` images of
  each set (BM3D costs seconds per image), the model scored on that subset too;
- super-resolution: Set5 and Set14, modcrop to the scale, Pillow-bicubic downscaling of the Y channel,
  PSNR on Y quantised to uint8 with `scale` pixels cropped at each border; bicubic upscaling the baseline;
  and what users send, colour photographs outside every training set (Kodak24): the RGB picture downscaled
  and saved as 8 bits, then upscaled by the served method (colour included) and by bicubic, PSNR on RGB.
Published figures (from the README) are stored beside the measured ones. Speed: megapixels per second
of input through the model's serving method (tiled) for a 512x512 grayscale image on this machine.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from models.checkpoint import Checkpoint
from models.data.natural_images import (
    awgn,
    bicubic_downscale,
    bicubic_upscale,
    colour_psnr_y,
    load_images,
    luminance,
    modcrop,
    noise_generator,
    psnr_255,
    psnr_y,
    quantise,
    to_tensor,
)
from models.evaluation.context import EvaluationContext, model_method
from models.quality.baselines import bm3d_denoise

DENOISE_SETS = ("BSD68", "Set12")
SR_SETS = ("Set5", "Set14")
ALL_SIGMAS = (15, 25, 50)

# ../shared/datasets/README.md: published PSNR (dB).
PUBLISHED_DENOISE_BSD68 = {
    "BM3D": {15: 31.07, 25: 28.57, 50: 25.62},
    "DnCNN-S": {15: 31.73, 25: 29.23, 50: 26.23},
    "DRUNet": {15: 31.91, 25: 29.48, 50: 26.59},
}
PUBLISHED_SR = {
    "Set5": {
        "bicubic": {2: 33.66, 3: 30.39, 4: 28.42},
        "SRCNN": {2: 36.66, 3: 32.75, 4: 30.48},
        "FSRCNN": {2: 37.00, 4: 30.71},
        "VDSR": {2: 37.53, 3: 33.66, 4: 31.35},
    },
    "Set14": {
        "bicubic": {2: 30.24, 3: 27.55, 4: 26.00},
        "SRCNN": {2: 32.42, 3: 29.28, 4: 27.49},
    },
}
# What each super-resolution architecture sets out to beat on Set5: the FSRCNN-style models SRCNN, the
# residual photo models FSRCNN (issue 20); SRCNN where the method has no published figure at that scale.
SR_TARGET_METHOD = {"fsrcnn": "SRCNN", "residual-sr": "FSRCNN"}
COLOUR_SR_SET = "Kodak24"  # colour photographs in no training set (T91, Train400)
COLOUR_SR_GAIN_DB = 2.0  # issue 20: +2 dB over bicubic on colour photographs outside the training data
SPEED_SIZE = 512
SPEED_REPEATS = 3


def _mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 3)


def megapixels_per_second(function: Any, size: int = SPEED_SIZE, repeats: int = SPEED_REPEATS) -> dict[str, Any]:
    """Input megapixels per second of `function` on one (1, 1, size, size) image: the median of `repeats`
    timed calls after one warm-up call."""
    image = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        function(image)
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            function(image)
            seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    return {
        "input": f"{size}x{size} grayscale",
        "seconds": round(median, 6),
        "megapixels_per_second": round(size * size / 1e6 / median, 3),
        "torch_threads": torch.get_num_threads(),
    }


def _denoise_set(
    checkpoint: Checkpoint, context: EvaluationContext, folder: str, sigma: int, bm3d_images: int | None
) -> dict[str, Any]:
    denoise = model_method(checkpoint, "denoise")
    images = load_images(context.natural_data_dir / folder)
    generator = noise_generator(context.settings.natural_noise_seed)
    noisy_scores, model_scores, bm3d_scores = [], [], []
    subset = len(images) if bm3d_images is None else min(bm3d_images, len(images))
    for index, image in enumerate(images):
        clean = to_tensor(image.pixels)  # (1, C, H, W): the denoising sets are grayscale, C = 1
        noisy = awgn(clean, sigma, generator)  # not clipped
        with torch.no_grad():
            output = denoise(noisy.to(context.device)).cpu()
        noisy_scores.append(psnr_255(noisy, clean))
        model_scores.append(psnr_255(quantise(output), clean))
        if index < subset:
            bm3d_scores.append(psnr_255(quantise(bm3d_denoise(noisy, sigma / 255.0)), clean))
    result: dict[str, Any] = {
        "images": len(images),
        "scores": {"noisy input": _mean(noisy_scores), "model": _mean(model_scores)},
        "bm3d_subset": {
            "images": subset,
            "scores": {
                "noisy input": _mean(noisy_scores[:subset]),
                "BM3D": _mean(bm3d_scores) if bm3d_scores else None,
                "model": _mean(model_scores[:subset]),
            },
        },
    }
    if folder == "BSD68":
        result["published"] = {name: figures[sigma] for name, figures in PUBLISHED_DENOISE_BSD68.items()}
    return result


def model_sigmas(checkpoint: Checkpoint) -> tuple[int, ...]:
    """The sigma a per-sigma model was trained for, or every protocol sigma for a blind model."""
    sigma = checkpoint.card.architecture_config.get("noise_sigma")
    return ALL_SIGMAS if sigma is None else (round(float(sigma)),)


# How long the published models trained (their papers), against which a model that misses a target is weighed.
PUBLISHED_TRAINING = {
    "denoise": (
        "DnCNN-S was trained for 50 epochs of 128 x 1,600 = 204,800 patches of 40x40 (Zhang et al., 2017)",
        10_240_000,
    ),
}


def training_budget(training: dict[str, Any]) -> tuple[int, float]:
    """(training patch passes, minutes) of a natural-image card, its starting checkpoints' training included."""
    patches = int(str(training.get("train_patches", "0")).split()[0])
    passes, seconds = 0, 0.0
    run: dict[str, Any] | None = training
    while run is not None:
        passes += int(run.get("epochs", 0)) * patches
        seconds += float(run.get("duration_s", 0.0))
        start = run.get("initialised_from")
        run = start.get("training") if isinstance(start, dict) else None
    return passes, seconds / 60


def closing_the_gap(training: dict[str, Any], task: str, shortfall_db: float) -> str:
    """What the report says of a missed target: by how much, and the training this model had against the paper's."""
    passes, minutes = training_budget(training)
    published, published_passes = PUBLISHED_TRAINING[task]
    return (
        f"Short by {shortfall_db:.2f} dB. This model saw {passes:,} training patch passes in {minutes:.0f} minutes "
        f"on {training.get('device', 'cpu')}; {published}, about {published_passes:,} patch passes "
        f"({published_passes / max(passes, 1):.0f}x more). The architecture is the published one: longer "
        "training (an hour or two on a GPU) is what would close the gap."
    )


def evaluate_natural_denoising(checkpoint: Checkpoint, context: EvaluationContext) -> dict[str, Any]:
    bm3d_images = context.settings.natural_bm3d_images
    noise: dict[str, Any] = {}
    for sigma in model_sigmas(checkpoint):
        noise[str(sigma)] = {
            folder: _denoise_set(checkpoint, context, folder, sigma, bm3d_images) for folder in DENOISE_SETS
        }
    result: dict[str, Any] = {
        "domain": "natural",
        "protocol": (
            "AWGN: noisy = clean/255 + (sigma/255) N(0, 1), one generator seeded "
            f"{context.settings.natural_noise_seed} drawn image after image in name order, noisy not clipped; output "
            "rounded to uint8; PSNR (peak 255) per image with no border cropped, the mean over images; BM3D (bm3d "
            f"package, told sigma) on the first {bm3d_images if bm3d_images is not None else 'all'} images of each set "
            "in name order, the model and the noisy input scored on that subset too"
        ),
        "noise": noise,
        "speed": megapixels_per_second(model_method(checkpoint, "denoise")),
    }
    if "25" in noise:
        measured = noise["25"]["BSD68"]["scores"]["model"]
        bm3d = PUBLISHED_DENOISE_BSD68["BM3D"][25]
        result["target"] = {
            "description": f"BSD68 sigma 25: at least BM3D's published {bm3d} dB (aim: DnCNN-S 29.23 dB)",
            "best_baseline": f"BM3D's published {bm3d} dB",
            "margin_db": round(measured - bm3d, 3),
            "met": bool(measured >= bm3d),
        }
        if measured < bm3d:
            result["target"]["closing_the_gap"] = closing_the_gap(checkpoint.card.training, "denoise", bm3d - measured)
    return result


def _super_resolve_set(checkpoint: Checkpoint, context: EvaluationContext, folder: str, scale: int) -> dict[str, Any]:
    upscale_luminance = model_method(checkpoint, "upscale_luminance")
    bicubic_scores, model_scores = [], []
    images = load_images(context.natural_data_dir / folder)
    for image in images:
        high = luminance(modcrop(image.pixels, scale))  # (1, 1, H, W) Y in [0, 1]
        low = bicubic_downscale(high, scale)  # (1, 1, H / scale, W / scale)
        with torch.no_grad():
            output = upscale_luminance(low.to(context.device)).cpu()
        bicubic_scores.append(psnr_y(bicubic_upscale(low, scale), high, scale))
        model_scores.append(psnr_y(output, high, scale))
    published = {name: figures[scale] for name, figures in PUBLISHED_SR[folder].items() if scale in figures}
    return {
        "images": len(images),
        "scores": {"bicubic": _mean(bicubic_scores), "model": _mean(model_scores)},
        "published": published,
    }


def sr_target(architecture: str, scale: int) -> tuple[str, float]:
    """(method, its published Set5 PSNR) that a super-resolution architecture is held to at `scale`."""
    method = SR_TARGET_METHOD.get(architecture, "SRCNN")
    if scale not in PUBLISHED_SR["Set5"][method]:
        method = "SRCNN"
    return method, PUBLISHED_SR["Set5"][method][scale]


def _super_resolve_colour(checkpoint: Checkpoint, context: EvaluationContext, scale: int) -> dict[str, Any]:
    """Kodak24 as a user would send it: RGB downscaled and saved as 8 bits; the served method against bicubic."""
    super_resolve = model_method(checkpoint, "super_resolve")
    scores: dict[str, list[float]] = {"bicubic": [], "model": []}
    luma: dict[str, list[float]] = {"bicubic": [], "model": []}  # the same outputs on Y: how much is colour
    images = load_images(context.natural_data_dir / COLOUR_SR_SET)
    for image in images:
        high = to_tensor(modcrop(image.pixels, scale))  # (1, 3, H, W) in [0, 1]
        low = quantise(bicubic_downscale(high, scale))  # the 8-bit upload
        with torch.no_grad():
            output = super_resolve(low.to(context.device)).cpu()
        for method, upscaled in (("bicubic", bicubic_upscale(low, scale)), ("model", output)):
            scores[method].append(psnr_255(quantise(upscaled), high, border=scale))
            luma[method].append(colour_psnr_y(upscaled, high, scale))
    means = {method: _mean(values) for method, values in scores.items()}
    gain = round(means["model"] - means["bicubic"], 3)
    return {
        "set": COLOUR_SR_SET,
        "images": len(images),
        "protocol": f"RGB modcropped to {scale}, each channel downscaled by Pillow's bicubic and rounded to 8 bits; "
        f"the served super-resolution (colour included) or bicubic x{scale}; PSNR on RGB (uint8 levels, {scale} "
        "pixels cropped at each border), the mean over images",
        "scores": means,
        "gain_db": gain,
        "luminance_scores": {method: _mean(values) for method, values in luma.items()},  # PSNR on Y of the same
        "target": {"description": f"+{COLOUR_SR_GAIN_DB:g} dB over bicubic", "met": bool(gain >= COLOUR_SR_GAIN_DB)},
    }


def evaluate_natural_super_resolution(checkpoint: Checkpoint, context: EvaluationContext) -> dict[str, Any]:
    scale = int(checkpoint.card.scale or 0)
    sets = {folder: _super_resolve_set(checkpoint, context, folder, scale) for folder in SR_SETS}
    result: dict[str, Any] = {
        "domain": "natural",
        "protocol": (
            f"x{scale}: modcrop to {scale}, the Y channel (BT.601, 16..235) downscaled by Pillow's bicubic (a = -0.5, "
            f"antialiased, as MATLAB's imresize); PSNR on Y quantised to uint8 with {scale} pixels cropped at each "
            "border, the mean over images; a grayscale image is its own Y"
        ),
        "scale": scale,
        "sets": sets,
        "colour_photographs": _super_resolve_colour(checkpoint, context, scale),
        "speed": megapixels_per_second(model_method(checkpoint, "super_resolve")),
    }
    method, published = sr_target(checkpoint.card.architecture, scale)
    measured = sets["Set5"]["scores"]["model"]
    aim = " (aim: FSRCNN 37.00 dB)" if scale == 2 and method == "SRCNN" else ""
    result["target"] = {
        "description": f"Set5 x{scale}: at least {method}'s published {published} dB{aim}",
        "best_baseline": f"{method}'s published {published} dB",
        "margin_db": round(measured - published, 3),
        "met": bool(measured >= published),
    }
    return result
