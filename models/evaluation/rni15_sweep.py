"""Before/after pictures of real camera noise (RNI15) at several noise levels: what to send as `sigma`.

    python -m models.evaluation.rni15_sweep --natural-dir ../shared/datasets \
        [--model checkpoints/photo-denoise-color] [--out docs/photo-denoise-rni15-sigmas.png]

Columns: three RNI15 photographs (central crops, shown at 2x); rows: the noisy input, the model at the
level the service estimates for the whole photograph (as a call without `sigma` gets), then at fixed
levels. Prints the estimates (the figure's labels cannot hold one per column).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from models.architectures import FFDNet
from models.checkpoint import load_checkpoint
from models.training.plots import image_grid

PHOTOS = ("Boy.png", "Frog.png", "Singer.png")  # low, middle and low estimates: visibly noisy all three
SIGMAS = (10.0, 20.0, 30.0, 45.0)
CROP = 144


def load_photo(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255.0


def centre(image: torch.Tensor, side: int) -> torch.Tensor:
    height, width = image.shape[-2:]
    side = min(side, height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[..., top : top + side, left : left + side]


def sweep(model: FFDNet, folder: Path, out: Path, photos: Sequence[str] = PHOTOS) -> dict[str, float]:
    """Write the figure; -> the estimated sigma of each photograph."""
    images = [load_photo(folder / name) for name in photos]
    estimates = {name: float(model.estimate_noise(image)[0]) for name, image in zip(photos, images, strict=True)}
    crops = [centre(image, CROP) for image in images]
    rows = [("noisy", torch.cat(crops))]
    with torch.no_grad():
        rows.append(
            ("estimated", torch.cat([model.denoise_at(c, estimates[n]) for n, c in zip(photos, crops, strict=True)]))
        )
        rows += [(f"sigma {sigma:g}", torch.cat([model.denoise_at(c, sigma) for c in crops])) for sigma in SIGMAS]
    image_grid(rows, out)
    return estimates


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.evaluation.rni15_sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--natural-dir", type=Path, required=True, help="the folder holding RNI15/")
    parser.add_argument("--model", type=Path, default=Path("checkpoints/photo-denoise-color"))
    parser.add_argument("--out", type=Path, default=Path("docs/photo-denoise-rni15-sigmas.png"))
    arguments = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = load_checkpoint(arguments.model).model
    if not isinstance(model, FFDNet):
        parser.error(f"{arguments.model}: a photo denoiser of every noise level (ffdnet) is needed")
    for name, sigma in sweep(model, arguments.natural_dir / "RNI15", arguments.out).items():
        print(f"{name}: estimated sigma {sigma:.2f}")
    print(f"wrote {arguments.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
