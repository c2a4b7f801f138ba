"""PNG figures drawn with Pillow (no plotting library): image grids and the 2-D latent-space maps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from models.architectures import ConvVAE

# matplotlib's 'tab10' palette: ten colours that stay distinguishable for the ten digits.
DIGIT_COLOURS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]  # fmt: skip


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def tile(images: torch.Tensor, columns: int, padding: int = 2) -> Image.Image:
    """(N, 1, H, W) images in [0, 1] -> one grayscale mosaic, `columns` wide, rows filled left to right."""
    count, _, height, width = images.shape
    rows = math.ceil(count / columns)
    pixels = (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()  # (N, H, W)
    canvas = np.full((rows * (height + padding) + padding, columns * (width + padding) + padding), 128, np.uint8)
    for position, image in enumerate(pixels):
        top = padding + (position // columns) * (height + padding)
        left = padding + (position % columns) * (width + padding)
        canvas[top : top + height, left : left + width] = image
    return Image.fromarray(canvas, mode="L")


def save_image_grid(images: torch.Tensor, columns: int, path: Path, zoom: int = 2) -> Path:
    mosaic = tile(images, columns)
    mosaic.resize((mosaic.width * zoom, mosaic.height * zoom), Image.Resampling.NEAREST).save(path)
    return path


def save_latent_scatter(
    points: torch.Tensor, labels: torch.Tensor, path: Path, title: str, size: int = 760, seed: int = 0
) -> Path:
    """Scatter of 2-D points (N, 2) coloured by digit label (N,), with axes, ticks and a legend."""
    margin, legend_width = 60, 90
    plot = size - 2 * margin
    image = Image.new("RGB", (size + legend_width, size), "white")
    draw = ImageDraw.Draw(image)
    coordinates = points.double().numpy()
    # Axis limits from the 0.2 and 99.8 percentiles so a few outliers do not shrink the picture.
    low = np.percentile(coordinates, 0.2, axis=0)
    high = np.percentile(coordinates, 99.8, axis=0)
    span = np.maximum(high - low, 1e-6)
    low, high = low - 0.05 * span, high + 0.05 * span

    def to_pixels(x: float, y: float) -> tuple[float, float]:
        return (margin + (x - low[0]) / (high[0] - low[0]) * plot, margin + (high[1] - y) / (high[1] - low[1]) * plot)

    draw.rectangle((margin, margin, margin + plot, margin + plot), outline="black")
    font = _font(14)
    for axis in (0, 1):
        for tick in range(math.ceil(low[axis]), math.floor(high[axis]) + 1):
            if axis == 0:
                x, _ = to_pixels(tick, low[1])
                draw.line((x, margin + plot, x, margin + plot + 5), fill="black")
                draw.text((x, margin + plot + 8), str(tick), fill="black", font=font, anchor="mt")
            else:
                _, y = to_pixels(low[0], tick)
                draw.line((margin - 5, y, margin, y), fill="black")
                draw.text((margin - 8, y), str(tick), fill="black", font=font, anchor="rm")
    draw.text((margin + plot / 2, size - 18), "z1 (posterior mean)", fill="black", font=font, anchor="mm")
    draw.text((12, margin + plot / 2), "z2", fill="black", font=font, anchor="lm")
    draw.text((margin + plot / 2, margin / 2), title, fill="black", font=_font(18), anchor="mm")
    # Draw in a seeded random order so that no digit systematically hides the others.
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).tolist()
    for position in order:
        x, y = to_pixels(*coordinates[position])
        if margin <= x <= margin + plot and margin <= y <= margin + plot:
            draw.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=DIGIT_COLOURS[int(labels[position]) % 10])
    for digit, colour in enumerate(DIGIT_COLOURS):
        top = margin + digit * 24
        draw.rectangle((size + 10, top, size + 24, top + 14), fill=colour)
        draw.text((size + 32, top + 7), str(digit), fill="black", font=font, anchor="lm")
    image.save(path)
    return path


def manifold_coordinates(grid: int) -> torch.Tensor:
    """Latent values whose prior CDFs are evenly spaced in [0.05, 0.95]: (grid,), increasing."""
    quantiles = torch.linspace(0.05, 0.95, grid, dtype=torch.float64)
    return torch.distributions.Normal(0.0, 1.0).icdf(quantiles).float()


def save_latent_manifold(model: ConvVAE, grid: int, path: Path, zoom: int = 2) -> Path:
    """Decode a grid x grid lattice over the 2-D latent space: z1 grows to the right, z2 upwards."""
    values = manifold_coordinates(grid)  # (grid,)
    z2, z1 = torch.meshgrid(values.flip(0), values, indexing="ij")  # row 0 holds the largest z2
    latents = torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)  # (grid*grid, 2), row-major
    device = next(model.parameters()).device
    with torch.no_grad():
        digits = model.decode(latents.to(device)).cpu()  # (grid*grid, 1, 28, 28)
    return save_image_grid(digits, grid, path, zoom=zoom)


def save_labelled_rows(rows: list[tuple[str, torch.Tensor]], path: Path, zoom: int = 2) -> Path:
    """One row of images per (label, (N, 1, H, W) images), the label written to the left of its row."""
    label_width, font = 130, _font(14)
    mosaics = [tile(images, images.shape[0]) for _, images in rows]
    width = label_width + max(mosaic.width for mosaic in mosaics) * zoom
    height = sum(mosaic.height for mosaic in mosaics) * zoom
    canvas = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(canvas)
    top = 0
    for (label, _), mosaic in zip(rows, mosaics, strict=True):
        scaled = mosaic.resize((mosaic.width * zoom, mosaic.height * zoom), Image.Resampling.NEAREST)
        canvas.paste(scaled, (label_width, top))
        draw.text((label_width - 8, top + scaled.height / 2), label, fill=0, font=font, anchor="rm")
        top += scaled.height
    canvas.save(path)
    return path
