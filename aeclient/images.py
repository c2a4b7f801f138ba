"""Turning what callers hold (paths, bytes, PIL images, numpy arrays) into image files, and PNGs back into images."""

from __future__ import annotations

import base64
import io
from os import PathLike
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

# A path to an image file, the file's bytes, a PIL image, or an array: (H, W) grayscale or (H, W, C) with C in
# {1, 3, 4}, uint8 in [0, 255] or float in [0, 1].
ImageInput = Union[str, "PathLike[str]", bytes, Image.Image, np.ndarray]


def array_to_image(array: np.ndarray) -> Image.Image:
    """(H, W) or (H, W, C) uint8, or float in [0, 1], as a PIL image."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"an image array is (H, W) or (H, W, C) with C in 1, 3, 4; got shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"an image array is uint8 or float in [0, 1]; got {array.dtype}")
        if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 1:
            raise ValueError("a float image array must hold values in [0, 1]")
        array = np.round(array * 255).astype(np.uint8)
    return Image.fromarray(array)


def image_file_bytes(image: ImageInput) -> bytes:
    """The bytes of an image file for one input; files and bytes are sent as they are, the rest as PNG."""
    if isinstance(image, bytes):
        return image
    if isinstance(image, str | PathLike):
        return Path(image).read_bytes()
    if isinstance(image, np.ndarray):
        image = array_to_image(image)
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    raise TypeError(f"expected a path, bytes, a PIL image or a numpy array, got {type(image).__name__}")


def encode_images(images: ImageInput | list[ImageInput] | tuple[ImageInput, ...]) -> list[str]:
    """One image or a list/tuple of them as the base64 strings of the JSON `images` field."""
    batch = list(images) if isinstance(images, list | tuple) else [images]
    return [base64.b64encode(image_file_bytes(image)).decode("ascii") for image in batch]


def decode_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def decode_b64_png(text: str) -> Image.Image:
    return decode_png(base64.b64decode(text))
