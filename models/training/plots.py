"""Small PNG figures drawn with Pillow: image grids and loss curves (no plotting library needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch.nn import functional as F

CELL = 28  # every image is shown in a 28x28 cell (smaller ones are enlarged with nearest neighbours)
PADDING = 2
LABEL_WIDTH = 64


def image_grid(rows: Sequence[tuple[str, torch.Tensor]], path: Path, zoom: int = 2) -> None:
    """Write labelled rows of images (each (N, C, h, w) in [0, 1], C = 1 or 3) as one PNG.

    Cells are 28x28, or the largest image's size when that is larger; smaller images are enlarged
    with nearest neighbours. The PNG is grayscale unless some row is RGB.
    """
    columns = max(images.shape[0] for _, images in rows)
    cell_height = max(CELL, *(images.shape[-2] for _, images in rows))
    cell_width = max(CELL, *(images.shape[-1] for _, images in rows))
    colour = any(images.shape[1] == 3 for _, images in rows)
    mode = "RGB" if colour else "L"
    width = LABEL_WIDTH + columns * (cell_width + PADDING)
    height = len(rows) * (cell_height + PADDING) + PADDING
    canvas = Image.new(mode, (width, height), color=(40, 40, 40) if colour else 40)
    draw = ImageDraw.Draw(canvas)
    for row, (label, images) in enumerate(rows):
        top = PADDING + row * (cell_height + PADDING)
        draw.text((4, top + cell_height // 2 - 5), label, fill=(255, 255, 255) if colour else 255)
        cells = F.interpolate(
            images.detach().float().cpu().clamp(0, 1), size=(cell_height, cell_width), mode="nearest"
        )  # (N, C, cell_height, cell_width)
        if colour:
            cells = cells.expand(-1, 3, -1, -1)  # grayscale rows drawn in grey
        pixels = (cells * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, h, w, C)
        for column, cell in enumerate(pixels):
            picture = Image.fromarray(cell if colour else cell[..., 0], mode=mode)
            canvas.paste(picture, (LABEL_WIDTH + column * (cell_width + PADDING), top))
    canvas = canvas.resize((width * zoom, height * zoom), Image.Resampling.NEAREST)
    canvas.save(path)


def loss_curve(
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    path: Path,
    title: str = "loss",
    size: tuple[int, int] = (640, 400),
    log_scale: bool = False,
) -> None:
    """Draw named (x, y) series on shared axes as one PNG. x is usually the (fractional) epoch."""
    colours = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))
    width, height = size
    left, right, top, bottom = 70, 20, 30, 40
    points = [(x, y) for _, values in series for x, y in values if math.isfinite(y) and (y > 0 or not log_scale)]
    canvas = Image.new("RGB", size, color="white")
    draw = ImageDraw.Draw(canvas)
    draw.text((left, 8), title, fill="black")
    if not points:
        canvas.save(path)
        return

    def transform(y: float) -> float:
        return math.log10(y) if log_scale else y

    x_low, x_high = min(x for x, _ in points), max(x for x, _ in points)
    y_low, y_high = min(transform(y) for _, y in points), max(transform(y) for _, y in points)
    x_span, y_span = (x_high - x_low) or 1.0, (y_high - y_low) or 1.0

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x_low) / x_span * (width - left - right)
        py = height - bottom - (transform(y) - y_low) / y_span * (height - top - bottom)
        return px, py

    draw.rectangle((left, top, width - right, height - bottom), outline="black")
    for fraction in (0.0, 0.5, 1.0):  # three y ticks: bottom, middle, top
        value = y_low + fraction * y_span
        label = f"{10**value:.4g}" if log_scale else f"{value:.4g}"
        _, py = to_pixel(x_low, 10**value if log_scale else value)
        draw.text((4, py - 6), label, fill="black")
    draw.text((left, height - bottom + 6), f"{x_low:g}", fill="black")
    draw.text((width - right - 40, height - bottom + 6), f"{x_high:g} epochs", fill="black")
    for index, (name, values) in enumerate(series):
        colour = colours[index % len(colours)]
        pixels = [to_pixel(x, y) for x, y in values if math.isfinite(y) and (y > 0 or not log_scale)]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        for px, py in pixels if len(pixels) <= 60 else []:
            draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=colour)
        draw.text((width - right - 200, top + 6 + 14 * index), name, fill=colour)
    canvas.save(path)
