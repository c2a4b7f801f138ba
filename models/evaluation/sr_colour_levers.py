"""Colour photographs through a luminance super-resolver: is the bicubic colour what limits the RGB gain?

    python -m models.evaluation.sr_colour_levers --natural-dir ../shared/datasets \
        --model checkpoints/photo-sr-x4 [--threads 1]

Kodak24 as users send it (RGB downscaled by Pillow's bicubic, saved as 8 bits), upscaled four ways: bicubic;
the served rule (the network on Y, Cb and Cr bicubic); the same network on Y, Cb and Cr alike; and on R, G
and B alike. Prints the mean RGB PSNR (uint8 levels, `scale` pixels cropped at each border) of each, and
bicubic's and the served rule's PSNR on Y alone: if colour by the network gains little, the luminance is
the limit.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from models.architectures.luminance_sr import LuminanceSuperResolver
from models.checkpoint import load_checkpoint
from models.data.natural_images import (
    bicubic_downscale,
    bicubic_upscale,
    colour_psnr_y,
    load_images,
    modcrop,
    psnr_255,
    quantise,
    rgb_to_ycbcr,
    to_tensor,
    ycbcr_to_rgb,
)

COLOUR_SET = "Kodak24"
SERVED = "served: Y by the network, Cb and Cr bicubic"


def each_plane(model: LuminanceSuperResolver, planes: torch.Tensor) -> torch.Tensor:
    """(B, 3, h, w) -> (B, 3, H, W): the luminance network on every plane by itself."""
    return torch.cat([model.upscale_luminance(planes[:, index : index + 1]) for index in range(3)], dim=1)


def colour_levers(model: LuminanceSuperResolver, folder: Path) -> dict[str, float]:
    """-> mean RGB PSNR of each way of upscaling the pictures in `folder`, and "bicubic, on Y" and "served, on
    Y" (dB)."""
    scale = model.scale
    scores: dict[str, list[float]] = {}
    with torch.no_grad():
        for image in load_images(folder):
            high = to_tensor(modcrop(image.pixels, scale))  # (1, 3, H, W)
            low = quantise(bicubic_downscale(high, scale))  # the 8-bit upload
            outputs = {
                "bicubic": bicubic_upscale(low, scale),
                SERVED: model.super_resolve(low),
                "Y, Cb and Cr by the network": ycbcr_to_rgb(each_plane(model, rgb_to_ycbcr(low))),
                "R, G and B by the network": each_plane(model, low),
            }
            for method, output in outputs.items():
                scores.setdefault(method, []).append(psnr_255(quantise(output), high, border=scale))
            for method, row in (("bicubic", "bicubic, on Y"), (SERVED, "served, on Y")):
                scores.setdefault(row, []).append(colour_psnr_y(outputs[method], high, scale))
    return {method: sum(values) / len(values) for method, values in scores.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.evaluation.sr_colour_levers", description=__doc__)
    parser.add_argument("--natural-dir", type=Path, required=True, help=f"the folder holding {COLOUR_SET}/")
    parser.add_argument("--model", type=Path, required=True, help="a luminance super-resolver's checkpoint folder")
    parser.add_argument("--threads", type=int, default=1)
    arguments = parser.parse_args(argv)
    torch.set_num_threads(arguments.threads)
    model = load_checkpoint(arguments.model).model.eval()
    if not isinstance(model, LuminanceSuperResolver):
        parser.error(f"{arguments.model} is not a luminance super-resolver (FSRCNN, ResidualSR)")
    for method, psnr in colour_levers(model, arguments.natural_dir / COLOUR_SET).items():
        print(f"{arguments.model.name} x{model.scale}, {method}: {psnr:.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
