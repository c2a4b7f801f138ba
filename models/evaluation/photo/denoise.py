"""The photo denoisers of every noise level (FFDNet): gray and colour sets, two protocols, BM3D/CBM3D beside.

The sets: BSD68 and Set12 for a grayscale model; CBSD68, Kodak24 and McMaster for a colour one (see
`../shared/datasets/README.md`). Each noise level draws its noise from one generator seeded 0, image
after image in name order (the DnCNN/FFDNet test code's convention). Two protocols:

- *literature*: noisy = clean + sigma/255 N(0, 1), not clipped (the published tables' protocol);
- *upload*: the same noisy image clipped to [0, 255] and rounded to 8 bits, what a served denoiser sees.

The model is told the true sigma (as the published non-blind figures are); under the upload protocol it
is also scored with the sigma the service would estimate (`models.quality.noise_estimation`), which is what an
API call without `sigma` gets. BM3D (grayscale) and CBM3D (`bm3d.bm3d_rgb`) are told the true sigma and
run on the first images of the first set in name order (they cost tens of seconds per image here); the
model is scored on that subset too, so the comparison is on the same inputs. Outputs are rounded to
uint8, PSNR has no border cropped. Also measured: the noise estimator's error (estimated minus true
sigma) and the speed in megapixels per second on a 512x512 image (one thread), the model's beside
BM3D's on the same image. RNI15 (real noisy photographs, no clean reference) becomes a figure.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from models.checkpoint import Checkpoint
from models.data.natural_images import noise_generator, psnr_255, quantise, read_pictures
from models.evaluation.context import EvaluationContext
from models.quality.noise_estimation import estimate_sigma

GRAY_SETS = ("BSD68", "Set12")
COLOUR_SETS = ("CBSD68", "Kodak24", "McMaster")
SIGMAS = (15, 25, 50, 75)
ESTIMATOR_SIGMAS = (5, 15, 25, 50)
PROTOCOLS = ("literature", "upload")
BASELINE_SIGMAS = (15, 25, 50)
SPEED_SIZE = 512
RNI15_FIGURE = "photo-denoise-rni15.png"

# ../shared/datasets/README.md (FFDNet paper): published PSNR (dB), literature protocol.
PUBLISHED = {
    "BSD68": {
        "BM3D": {15: 31.07, 25: 28.57, 50: 25.62, 75: 24.21},
        "DnCNN-S": {15: 31.73, 25: 29.23, 50: 26.23},
        "FFDNet": {15: 31.63, 25: 29.19, 50: 26.29, 75: 24.79},
    },
    "CBSD68": {
        "CBM3D": {15: 33.52, 25: 30.71, 50: 27.38},
        "CDnCNN": {15: 33.89, 25: 31.23, 50: 27.92},
        "FFDNet": {15: 33.87, 25: 31.21, 50: 27.96},
    },
    "Kodak24": {
        "CBM3D": {15: 34.28, 25: 31.68, 50: 28.46},
        "CDnCNN": {15: 34.48, 25: 32.03, 50: 28.85},
        "FFDNet": {15: 34.63, 25: 32.13, 50: 28.98},
    },
    "McMaster": {
        "CBM3D": {15: 34.06, 25: 31.66, 50: 28.51},
        "CDnCNN": {15: 33.44, 25: 31.51, 50: 28.61},
        "FFDNet": {15: 34.66, 25: 32.35, 50: 29.18},
    },
}
# How long the published model trained, against which a missed target is weighed (FFDNet paper, Sec. IV-A).
PUBLISHED_TRAINING = (
    "FFDNet was trained on 128 x 8,000 = 1,024,000 patches of 50x50 (gray) per epoch, for about 80 epochs "
    "(Zhang, Zuo, Zhang 2018: learning rate 1e-3 then 1e-4, the orthogonalisation stage after)",
    80 * 1_024_000,
)


def read_set(folder: Path, channels: int) -> list[np.ndarray]:
    """The images of a test set in name order as float64 0..255 arrays, (H, W) gray or (H, W, 3)."""
    return [picture.astype(np.float64) for picture in read_pictures(folder, channels)]


def to_batch(pixels: np.ndarray) -> torch.Tensor:
    """0..255 (H, W) or (H, W, C) -> (1, C, H, W) float32 in [0, 1] (not clipped)."""
    array = pixels[..., None] if pixels.ndim == 2 else pixels
    return torch.from_numpy(array / 255.0).permute(2, 0, 1)[None].float()


def noisy_pair(clean: torch.Tensor, sigma: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """{protocol: noisy image}: one noise draw, kept as floats (literature) and as 8 bits (upload)."""
    noise = torch.randn(clean.shape, generator=generator, dtype=torch.float64).float()
    literature = clean + sigma / 255.0 * noise
    return {"literature": literature, "upload": quantise(literature)}


def bm3d_baseline(noisy: torch.Tensor, sigma: float) -> torch.Tensor:
    """BM3D (grayscale) or CBM3D (colour) told sigma: (1, C, H, W) -> (1, C, H, W) in [0, 1]."""
    import bm3d  # evaluation extra

    plane = noisy[0].permute(1, 2, 0).double().numpy()
    if plane.shape[2] == 3:
        output = bm3d.bm3d_rgb(plane, sigma / 255.0)
    else:
        output = bm3d.bm3d(plane[..., 0], sigma / 255.0)[..., None]
    return torch.from_numpy(np.asarray(output)).permute(2, 0, 1)[None].float().clamp(0.0, 1.0)


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


def score_set(
    denoise: Callable[[torch.Tensor, float], torch.Tensor],
    estimate: Callable[[torch.Tensor], float],
    images: list[np.ndarray],
    sigma: float,
    seed: int,
    baseline_images: int,
    with_estimate: bool,
) -> dict[str, Any]:
    """One set at one sigma under both protocols: PSNR of the noisy input, the model (told the true sigma,
    and for uploads also with the estimated sigma when `with_estimate`), BM3D on the first `baseline_images`."""
    generator = noise_generator(seed)
    scores: dict[str, dict[str, list[float]]] = {protocol: {} for protocol in PROTOCOLS}
    estimates: list[float] = []

    def add(protocol: str, name: str, value: float) -> None:
        scores[protocol].setdefault(name, []).append(value)

    for index, pixels in enumerate(images):
        clean = to_batch(pixels)
        noisy = noisy_pair(clean, sigma, generator)
        for protocol in PROTOCOLS:
            add(protocol, "noisy input", psnr_255(noisy[protocol], clean))
            model_psnr = psnr_255(quantise(denoise(noisy[protocol], sigma)), clean)
            add(protocol, "model", model_psnr)
            if index < baseline_images:
                add(protocol, "model (baseline subset)", model_psnr)
                add(
                    protocol, "BM3D (baseline subset)", psnr_255(quantise(bm3d_baseline(noisy[protocol], sigma)), clean)
                )
        if with_estimate:
            estimated = estimate(noisy["upload"])
            estimates.append(estimated - sigma)
            add("upload", "model, sigma estimated", psnr_255(quantise(denoise(noisy["upload"], estimated)), clean))
    result: dict[str, Any] = {
        protocol: {name: _mean(values) for name, values in named.items()} for protocol, named in scores.items()
    }
    result["baseline_subset_images"] = min(baseline_images, len(images))
    if estimates:
        result["estimated_sigma_error_upload"] = _error_summary(estimates)
    return result


def _error_summary(errors: list[float]) -> dict[str, float]:
    values = np.asarray(errors)
    return {
        "bias": round(float(values.mean()), 3),
        "mean_absolute": round(float(np.abs(values).mean()), 3),
        "worst": round(float(np.abs(values).max()), 3),
    }


def estimator_errors(images: list[np.ndarray], sigmas: tuple[int, ...], seed: int) -> dict[str, Any]:
    """Estimated minus true sigma over a set, per sigma and protocol (no model involved)."""
    result: dict[str, Any] = {}
    for sigma in sigmas:
        generator = noise_generator(seed)
        errors: dict[str, list[float]] = {protocol: [] for protocol in PROTOCOLS}
        for pixels in images:
            noisy = noisy_pair(to_batch(pixels), sigma, generator)
            for protocol in PROTOCOLS:
                levels = (noisy[protocol][0].permute(1, 2, 0).double().numpy() * 255.0).round(6)
                errors[protocol].append(estimate_sigma(levels) - sigma)
        result[str(sigma)] = {protocol: _error_summary(values) for protocol, values in errors.items()}
    every = [result[str(s)][protocol]["mean_absolute"] for s in sigmas for protocol in PROTOCOLS]
    result["mean_absolute_over_sigmas"] = {
        protocol: round(float(np.mean([result[str(s)][protocol]["mean_absolute"] for s in sigmas])), 3)
        for protocol in PROTOCOLS
    }
    result["worst_mean_absolute"] = round(float(max(every)), 3)
    return result


def speed(denoise: Callable[[torch.Tensor, float], torch.Tensor], channels: int, with_baseline: bool) -> dict[str, Any]:
    """Megapixels per second on one 512x512 image at sigma 25: the model (median of 3 after a warm-up) and,
    once, BM3D or CBM3D on the same image; both on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generator = torch.Generator().manual_seed(0)
        clean = torch.rand(1, channels, SPEED_SIZE, SPEED_SIZE, generator=generator)
        noisy = quantise(clean + 25 / 255 * torch.randn(clean.shape, generator=generator))
        denoise(noisy, 25.0)
        seconds = []
        for _ in range(3):
            started = time.perf_counter()
            denoise(noisy, 25.0)
            seconds.append(time.perf_counter() - started)
        megapixels = SPEED_SIZE * SPEED_SIZE / 1e6
        result: dict[str, Any] = {
            "input": f"{SPEED_SIZE}x{SPEED_SIZE} {'colour' if channels == 3 else 'grayscale'}, sigma 25, one thread",
            "model_megapixels_per_second": round(megapixels / statistics.median(seconds), 3),
        }
        if with_baseline:
            started = time.perf_counter()
            bm3d_baseline(noisy, 25.0)
            baseline_seconds = time.perf_counter() - started
            result["bm3d_megapixels_per_second"] = round(megapixels / baseline_seconds, 4)
            result["bm3d"] = "CBM3D (bm3d.bm3d_rgb)" if channels == 3 else "BM3D (bm3d.bm3d)"
            result["speedup_over_bm3d"] = round(
                result["model_megapixels_per_second"] / result["bm3d_megapixels_per_second"], 1
            )
        return result
    finally:
        torch.set_num_threads(threads)


def rni15_figure(
    denoise: Callable[[torch.Tensor, float], torch.Tensor],
    estimate: Callable[[torch.Tensor], float],
    folder: Path,
    path: Path,
    channels: int,
    crop: int = 192,
) -> dict[str, float]:
    """Real noisy photographs: a centre crop of each before (top) and after (bottom), sigma estimated."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    mode = "L" if channels == 1 else "RGB"
    tiles_before, tiles_after, sigmas = [], [], {}
    for image_path in paths:
        with Image.open(image_path) as image:
            pixels = np.asarray(image.convert(mode), dtype=np.float64)
        noisy = quantise(to_batch(pixels))
        sigma = estimate(noisy)
        sigmas[image_path.name] = round(sigma, 2)
        clean = denoise(noisy, sigma)
        height, width = noisy.shape[-2:]
        top, left = max(0, (height - crop) // 2), max(0, (width - crop) // 2)
        window = (slice(None), slice(None), slice(top, top + crop), slice(left, left + crop))
        tiles_before.append(noisy[window][0])
        tiles_after.append(clean[window][0])
    columns = len(tiles_before)
    side = crop
    sheet = Image.new(mode, (columns * (side + 4), 2 * (side + 4)), 255 if mode == "L" else (255, 255, 255))
    for column, (before, after) in enumerate(zip(tiles_before, tiles_after, strict=True)):
        for row, tile in enumerate((before, after)):
            array = (tile.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            picture = Image.fromarray(array[..., 0] if mode == "L" else array, mode)
            sheet.paste(picture, (column * (side + 4), row * (side + 4)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    return sigmas


def evaluate_photo_denoising(checkpoint: Checkpoint, context: EvaluationContext) -> dict[str, Any]:
    """Every figure of the module docstring for one FFDNet checkpoint."""
    # Channels-last runs these convolutions ~1.5x faster on CPUs and gives the same float32 results (to
    # rounding): the figures are the float32 model's.
    model = checkpoint.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    channels = int(checkpoint.card.input.channels)
    settings = context.settings
    seed = settings.natural_noise_seed
    baseline_images = settings.photo_baseline_images_gray if channels == 1 else settings.photo_baseline_images_colour
    baseline_sigmas = settings.photo_baseline_sigmas_gray if channels == 1 else settings.photo_baseline_sigmas_colour

    def denoise(noisy: torch.Tensor, sigma: float) -> torch.Tensor:
        with torch.no_grad():
            return model.denoise_at(noisy.to(context.device), sigma).cpu()

    def estimate(noisy: torch.Tensor) -> float:
        return float(model.estimate_noise(noisy)[0])

    sets = GRAY_SETS if channels == 1 else COLOUR_SETS
    results: dict[str, Any] = {}
    for index, folder in enumerate(sets):
        images = read_set(context.natural_data_dir / folder, channels)[: settings.photo_images_per_set]
        per_sigma: dict[str, Any] = {}
        sigmas = settings.photo_sigmas_gray if channels == 1 else settings.photo_sigmas_colour
        for sigma in sigmas:
            is_first = index == 0
            subset = baseline_images if is_first and sigma in baseline_sigmas else 0
            per_sigma[str(sigma)] = score_set(denoise, estimate, images, sigma, seed, subset, with_estimate=is_first)
        results[folder] = {"images": len(images), "sigmas": per_sigma, "published": PUBLISHED.get(folder, {})}

    first = read_set(context.natural_data_dir / sets[0], channels)[: settings.photo_images_per_set]
    estimator_images = None if channels == 1 else settings.photo_estimator_images_colour
    metrics: dict[str, Any] = {
        "domain": "natural",
        "protocol": __doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else "",
        "sets": results,
        "noise_estimation": {
            "set": sets[0],
            "images": len(first[:estimator_images]),
            **estimator_errors(first[:estimator_images], ESTIMATOR_SIGMAS, seed),
        },
        "speed": speed(denoise, channels, with_baseline=settings.photo_speed_baseline),
    }
    rni15 = context.natural_data_dir / "RNI15"
    if rni15.is_dir():
        figure = f"{checkpoint.card.name}-rni15.png"
        metrics["rni15"] = {
            "figure": figure,
            "estimated_sigma": rni15_figure(denoise, estimate, rni15, context.figures_dir / figure, channels),
        }
    metrics["targets"] = targets(metrics, sets[0], channels, checkpoint.card.training)
    return metrics


def targets(metrics: dict[str, Any], first_set: str, channels: int, training: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each met or missed by how much, from the figures above."""
    found: list[dict[str, Any]] = []
    sigmas = metrics["sets"][first_set]["sigmas"]
    baseline = "BM3D" if channels == 1 else "CBM3D"
    for sigma, figures in sigmas.items():
        for protocol in PROTOCOLS:
            model = figures[protocol].get("model (baseline subset)")
            bm3d = figures[protocol].get("BM3D (baseline subset)")
            if model is None or bm3d is None:
                continue
            entry = {
                "description": f"{first_set} sigma {sigma}, {protocol} protocol: at least {baseline} on the same "
                f"{figures['baseline_subset_images']} images",
                "model_db": model,
                "baseline_db": bm3d,
                "margin_db": round(model - bm3d, 3),
                "met": bool(model >= bm3d),
            }
            found.append(entry)
    published = PUBLISHED[first_set]["FFDNet"].get(25)
    measured = sigmas.get("25", {}).get("literature", {}).get("model")
    if published is not None and measured is not None:
        found.append(
            {
                "description": f"{first_set} sigma 25, literature protocol, all images: aim FFDNet's published "
                f"{published} dB",
                "model_db": measured,
                "baseline_db": published,
                "margin_db": round(measured - published, 3),
                "met": bool(measured >= published),
            }
        )
    speed_figures = metrics["speed"]
    if "speedup_over_bm3d" in speed_figures:
        found.append(
            {
                "description": f"speed on one thread: at least 5x {baseline} on the same 512x512 image",
                "model_db": None,
                "baseline_db": None,
                "margin_db": None,
                "speedup": speed_figures["speedup_over_bm3d"],
                "met": bool(speed_figures["speedup_over_bm3d"] >= 5.0),
            }
        )
    if channels == 1:
        mae = metrics["noise_estimation"]["mean_absolute_over_sigmas"]["literature"]
        found.append(
            {
                "description": "noise estimation: mean absolute error <= 1.5 on BSD68 at sigma 5..50 "
                "(literature protocol)",
                "mean_absolute_error": mae,
                "upload_protocol_mean_absolute_error": metrics["noise_estimation"]["mean_absolute_over_sigmas"][
                    "upload"
                ],
                "met": bool(mae <= 1.5),
            }
        )
    passes = int(training.get("patch_passes", 0))
    for entry in found:
        if not entry["met"] and entry.get("margin_db") is not None:
            entry["closing_the_gap"] = (
                f"Short by {-entry['margin_db']:.2f} dB. This model saw {passes:,} patch passes in "
                f"{training.get('minutes', '?')} minutes on a shared 2-core CPU; {PUBLISHED_TRAINING[0]}, about "
                f"{PUBLISHED_TRAINING[1]:,} patch passes ({PUBLISHED_TRAINING[1] / max(passes, 1):.0f}x more)."
            )
    return found
