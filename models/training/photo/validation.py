"""The validation of a photo denoiser during training: the learning curve's y axis.

A fixed subset: the first 12 images (name order) of BSD68 for a grayscale model, CBSD68 for a colour
one, each cropped to its central 256x256 pixels (BSD68's images are 481x321: whole ones would cost
~2.4x more, every few minutes, on a shared CPU thread; a 256 crop still holds most of each picture).
At sigma 15, 25 and 50 (0..255 scale) the noise comes from one generator seeded 0, image after image;
the noisy input is clipped to [0, 255] and rounded to 8 bits (an upload, as the service sees it), the
output is rounded too, and the figure is the mean PSNR.

These are test-set images: the curve chooses nothing but whether a continued run's weights replace the
served ones, and the evaluation (`python -m models.evaluate`) scores the whole sets afterwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.data.natural_images import psnr_255, quantise, read_pictures

VALIDATION_SIGMAS = (15.0, 25.0, 50.0)
VALIDATION_IMAGES = 12
VALIDATION_CROP = 256


@dataclass(frozen=True)
class ValidationSet:
    folder: str
    clean: list[torch.Tensor]  # (1, C, crop, crop) in [0, 1]

    @property
    def description(self) -> str:
        side = self.clean[0].shape[-1] if self.clean else 0
        return (
            f"the first {len(self.clean)} images of {self.folder} (name order), central {side}x{side} crops; "
            f"sigma {'/'.join(f'{s:g}' for s in VALIDATION_SIGMAS)}, noise seeded 0, 8-bit clipped noisy input"
        )


def load_validation_set(
    data_dir: Path, folder: str, channels: int, images: int = VALIDATION_IMAGES, crop: int = VALIDATION_CROP
) -> ValidationSet:
    clean = []
    for pixels in read_pictures(Path(data_dir) / folder, channels)[:images]:
        planes = pixels if pixels.ndim == 3 else pixels[..., None]
        side = min(crop, planes.shape[0], planes.shape[1]) // 2 * 2
        top, left = (planes.shape[0] - side) // 2, (planes.shape[1] - side) // 2
        window = np.array(planes[top : top + side, left : left + side])  # a writable copy
        clean.append(torch.from_numpy(window).permute(2, 0, 1)[None].float() / 255.0)
    return ValidationSet(folder=folder, clean=clean)


@torch.no_grad()
def validation_psnr(model: Any, validation: ValidationSet, device: torch.device | str = "cpu") -> dict[str, float]:
    """-> {"sigma_15": dB, "sigma_25": dB, "sigma_50": dB, "mean": dB}; the model is left in eval mode."""
    model.eval()
    figures: dict[str, float] = {}
    for sigma in VALIDATION_SIGMAS:
        generator = torch.Generator().manual_seed(0)
        total = 0.0
        for clean in validation.clean:
            noisy = quantise(clean + sigma / 255.0 * torch.randn(clean.shape, generator=generator))
            output = quantise(model(noisy.to(device), sigma).float().cpu())
            total += psnr_255(output, clean)
        figures[f"sigma_{sigma:g}"] = round(float(total / len(validation.clean)), 3)
    figures["mean"] = round(float(sum(figures.values()) / len(VALIDATION_SIGMAS)), 3)
    return figures


def validation_point(patch_passes: int, minutes: float, figures: dict[str, float]) -> dict[str, Any]:
    """One point of the learning curve, as run.json keeps it."""
    return {
        "patch_passes": patch_passes,
        "minutes": round(minutes, 2),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **figures,
    }
