"""The report section of the photo denoisers (models.evaluation.photo.denoise): one table per set (sigma x
method, both protocols), the noise estimator, speed, targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.evaluation.photo.denoise import ESTIMATOR_SIGMAS, PROTOCOLS


def render_photo_denoise(metrics: dict[str, Any], report_dir: Path) -> list[str]:
    """The report section: one table per set (sigma x method, both protocols), estimator, speed, targets."""
    lines = [metrics["protocol"], ""]
    for folder, result in metrics["sets"].items():
        header = [
            "sigma",
            "protocol",
            "noisy",
            "model",
            "model, sigma estimated",
            "model (subset)",
            "BM3D (subset, measured)",
            "published",
        ]
        rows = []
        for sigma, figures in result["sigmas"].items():
            published = ", ".join(
                f"{name} {values[int(sigma)]:.2f}"
                for name, values in result["published"].items()
                if int(sigma) in values
            )
            for protocol in PROTOCOLS:
                row = figures[protocol]

                def cell(name: str, row: dict[str, Any] = row) -> str:
                    value = row.get(name)
                    return "-" if value is None else f"{value:.2f}"

                rows.append(
                    [
                        sigma,
                        protocol,
                        cell("noisy input"),
                        cell("model"),
                        cell("model, sigma estimated"),
                        cell("model (baseline subset)"),
                        cell("BM3D (baseline subset)"),
                        published if protocol == "literature" else "-",
                    ]
                )
        subset = max(figures["baseline_subset_images"] for figures in result["sigmas"].values())
        lines += [f"{folder} ({result['images']} images; PSNR in dB; the subset is the first {subset} images):", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    estimation = metrics["noise_estimation"]
    lines += [
        f"Noise estimation on {estimation['set']} ({estimation.get('images', 'all')} images; estimated minus true "
        "sigma, 0..255 scale):",
        "",
    ]
    lines += ["| sigma | protocol | bias | mean absolute | worst |", "|---|---|---|---|---|"]
    for sigma in ESTIMATOR_SIGMAS:
        for protocol in PROTOCOLS:
            error = estimation[str(sigma)][protocol]
            lines.append(
                f"| {sigma} | {protocol} | {error['bias']:+.2f} | {error['mean_absolute']:.2f} | {error['worst']:.2f} |"
            )
    lines.append("")
    speed_figures = metrics["speed"]
    line = f"Speed ({speed_figures['input']}): model {speed_figures['model_megapixels_per_second']:.3f} megapixels/s"
    if "bm3d_megapixels_per_second" in speed_figures:
        line += (
            f", {speed_figures['bm3d']} {speed_figures['bm3d_megapixels_per_second']:.4f} megapixels/s: "
            f"{speed_figures['speedup_over_bm3d']}x"
        )
    lines += [line + ".", ""]
    for target in metrics["targets"]:
        verdict = "**met**" if target["met"] else "**not met**"
        if target.get("margin_db") is not None:
            detail = f"model {target['model_db']:.2f} dB vs {target['baseline_db']:.2f} dB ({target['margin_db']:+.2f})"
        elif "speedup" in target:
            detail = f"{target['speedup']}x"
        else:
            detail = (
                f"mean absolute error {target['mean_absolute_error']:.2f} "
                f"(upload protocol {target['upload_protocol_mean_absolute_error']:.2f})"
            )
        lines.append(
            f"- Target: {target['description']}: {detail}: {verdict}."
            + (f" {target['closing_the_gap']}" if "closing_the_gap" in target else "")
        )
    lines.append("")
    if "rni15" in metrics:
        figure = metrics["rni15"]["figure"]
        caption = (
            "RNI15 real noisy photographs, centre crops: as uploaded (top), denoised with the estimated sigma (bottom)"
        )
        sigmas = ", ".join(f"{name} {value:.1f}" for name, value in metrics["rni15"]["estimated_sigma"].items())
        lines += [f"![{caption}]({figure})", "", f"*{caption}. Estimated sigma: {sigmas}.*", ""]
    return lines
