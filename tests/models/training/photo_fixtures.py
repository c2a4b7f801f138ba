"""Generated pictures and small recipes for the photo-denoiser tests (no data set needed)."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
from PIL import Image

from models.architectures import FFDNetConfig
from models.training import rotation
from models.training.photo import denoise as ffdnet_training


def scene(height: int, width: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A smooth 0..255 picture with a few edges: gradients, a disc and a bar."""
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float64)
    picture = 60 + 100 * columns / width + 40 * np.sin(rows / 9.0)
    picture[(rows - height / 2) ** 2 + (columns - width / 3) ** 2 < (min(height, width) / 5) ** 2] = 200
    picture[height // 5 : height // 5 + 6, :] = 30
    planes = [np.roll(picture, 7 * channel, axis=1) for channel in range(channels)]
    image = np.stack(planes, axis=-1) if channels == 3 else planes[0]
    return image


def write_photo_data(root: Path) -> Path:
    """Generated pictures in the folders the recipes, the validation and the evaluation read."""
    layout = {
        "Train400": (1, 6, 64),
        "CBSD432": (3, 6, 64),
        "BSD68": (1, 2, 40),
        "Set12": (1, 1, 36),
        "CBSD68": (3, 2, 40),
        "Kodak24": (3, 1, 36),
        "McMaster": (3, 1, 36),
        "RNI15": (3, 2, 48),
    }
    for folder, (channels, count, side) in layout.items():
        (root / folder).mkdir()
        for index in range(count):
            pixels = scene(side, side + 4 * index, channels, seed=index).clip(0, 255).astype(np.uint8)
            suffix = "jpg" if folder == "CBSD432" else "png"
            Image.fromarray(pixels).save(root / folder / f"{index:02d}.{suffix}")
    return root


def small_recipe(name: str) -> ffdnet_training.PhotoDenoiseRecipe:
    recipe = ffdnet_training.PHOTO_DENOISE_RECIPES[name]
    config = FFDNetConfig(channels=recipe.config.channels, depth=3, width=8)
    return ffdnet_training.PhotoDenoiseRecipe(**{**recipe.__dict__, "config": config, "patch": 16, "batch_size": 4})


def run_rotation(arguments: list[str]) -> int:
    """`python -m models.training.rotation ARGUMENTS` in-process; the stop handlers it installs are undone."""
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        return rotation.main(arguments)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
