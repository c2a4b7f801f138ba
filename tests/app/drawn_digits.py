"""Digits drawn by the tests: MNIST-like 28x28 white-on-black digits, and a photo of a digit on paper."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont


def render_digit(digit: int, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """A white digit on black, jittered in size, thickness, position and angle: (size, size) floats in [0, 1]."""
    scale = size / 28
    font = ImageFont.load_default(size=round(rng.uniform(19, 24) * scale))
    canvas = Image.new("L", (size * 2, size * 2), 0)
    draw = ImageDraw.Draw(canvas)
    stroke = int(rng.integers(0, 2) * max(1, round(scale)))
    draw.text((size, size), str(digit), fill=255, font=font, anchor="mm", stroke_width=stroke, stroke_fill=255)
    canvas = canvas.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR)
    dx, dy = rng.integers(-2, 3, size=2) * max(1, round(scale))
    left, top = size // 2 - int(dx), size // 2 - int(dy)
    canvas = canvas.crop((left, top, left + size, top + size))
    return np.asarray(canvas, dtype=np.float32) / 255.0


def digit_batch(count: int, seed: int, size: int = 28) -> torch.Tensor:
    """(count, 1, size, size) digits 0-9 in turn."""
    rng = np.random.default_rng(seed)
    images = [render_digit(i % 10, rng, size) for i in range(count)]
    return torch.from_numpy(np.stack(images)).unsqueeze(1)


def png_bytes(image: torch.Tensor | np.ndarray, mode: str = "L") -> bytes:
    """(1, H, W) / (H, W) floats in [0, 1] -> PNG bytes."""
    array = image.squeeze().numpy() if isinstance(image, torch.Tensor) else np.asarray(image).squeeze()
    buffer = io.BytesIO()
    Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8), mode="L").convert(mode).save(buffer, "PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> (H, W) floats in [0, 1]."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32) / 255.0


def digit_photo(digit: int = 7, seed: int = 0, size: tuple[int, int] = (200, 160)) -> bytes:
    """A JPEG 'photo' of a dark digit written on light, textured paper, off-centre, with uneven light."""
    rng = np.random.default_rng(seed)
    width, height = size
    paper = Image.new("L", size, 225)
    draw = ImageDraw.Draw(paper)
    font = ImageFont.load_default(size=int(height * 0.55))
    ink = {"fill": 40, "stroke_width": 3, "stroke_fill": 40}
    draw.text((width * 0.42, height * 0.55), str(digit), font=font, anchor="mm", **ink)
    paper = paper.filter(ImageFilter.GaussianBlur(1.2))  # a slightly soft pen and lens
    pixels = np.asarray(paper, dtype=np.float32)
    light = np.linspace(-18, 12, width)[None, :] + np.linspace(-8, 8, height)[:, None]  # uneven lighting
    grain = rng.normal(0, 7, pixels.shape)  # paper texture and sensor noise
    pixels = np.clip(pixels + light + grain, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").convert("RGB").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()
