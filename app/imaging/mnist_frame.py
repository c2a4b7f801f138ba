"""Bring any picture of a digit into the MNIST frame, the way MNIST itself was made.

MNIST digits are white on black, anti-aliased, scaled so the digit fits a 20x20 box keeping its
aspect ratio, and placed in a 28x28 field so that their centre of mass is at the centre. A photo of a
digit written on paper is none of these, so `to_mnist_frame`:
1. inverts dark-on-light pictures (judged from the border, which is background in a digit photo);
2. removes the background: subtracts its level (the median pixel) and soft-thresholds what is left
   at half of Otsu's threshold, so paper texture and sensor noise become 0 while the ink keeps its
   anti-aliased edges;
3. crops to the digit, ignoring the faintest 0.2 % of ink mass at each side (stray specks);
4. scales the crop so its longer side is 20 pixels (area-averaging, like MNIST's anti-aliasing) and
   stretches the result so the brightest ink is 1, as in MNIST's strokes;
5. pastes it into 28x28 with its centre of mass at pixel (14, 14), kept fully inside the field.
A picture with no ink at all comes out black.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

FRAME_SIZE = 28
DIGIT_BOX = 20
BORDER_FRACTION = 0.05  # the outer ring whose median decides dark-on-light
CROP_MASS_QUANTILE = 0.002
MIN_INK_CONTRAST = 0.05  # below this the picture is taken as blank


def to_mnist_frame(gray: np.ndarray) -> np.ndarray:
    """(H, W) floats in [0, 1], any size -> (28, 28) float32, white digit on black, centred."""
    image = np.asarray(gray, dtype=np.float32)
    if is_dark_on_light(image):
        image = 1.0 - image
    ink = remove_background(image)
    if ink.max() <= 0.0:
        return np.zeros((FRAME_SIZE, FRAME_SIZE), dtype=np.float32)
    digit = fit_in_box(crop_to_ink(ink), DIGIT_BOX)
    return centre_by_mass(digit, FRAME_SIZE)


def is_dark_on_light(image: np.ndarray) -> bool:
    height, width = image.shape
    ring = max(1, round(min(height, width) * BORDER_FRACTION))
    border = np.concatenate(
        [image[:ring].ravel(), image[-ring:].ravel(), image[:, :ring].ravel(), image[:, -ring:].ravel()]
    )
    return float(np.median(border)) > 0.5


def remove_background(image: np.ndarray) -> np.ndarray:
    """Bright ink on a darker background -> ink in [0, 1] on exactly 0."""
    background = float(np.median(image))
    contrast = float(image.max()) - background
    if contrast < MIN_INK_CONTRAST:
        return np.zeros_like(image)
    normalised = np.clip((image - background) / contrast, 0.0, 1.0)
    cut = 0.5 * otsu_threshold(normalised)
    return np.clip((normalised - cut) / (1.0 - cut), 0.0, 1.0)


def otsu_threshold(image: np.ndarray, bins: int = 256) -> float:
    """The threshold in [0, 1] that best separates two classes of pixel values (Otsu, 1979): the
    background is <= it, the ink above it."""
    histogram, edges = np.histogram(image, bins=bins, range=(0.0, 1.0))
    weights = histogram.astype(np.float64) / max(1, histogram.sum())
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(weights)  # share of pixels at or below each bin
    mass_below = np.cumsum(weights * centres)
    total_mass = mass_below[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mass * below - mass_below) ** 2 / (below * (1.0 - below))
    between = np.nan_to_num(between, nan=0.0, posinf=0.0)
    return float(edges[int(np.argmax(between)) + 1])  # the upper edge of the last background bin


def crop_to_ink(ink: np.ndarray) -> np.ndarray:
    top, bottom = _mass_span(ink.sum(axis=1))
    left, right = _mass_span(ink.sum(axis=0))
    return ink[top : bottom + 1, left : right + 1]


def _mass_span(profile: np.ndarray) -> tuple[int, int]:
    """First and last index inside the central (1 - 2 * quantile) of the profile's mass."""
    cumulative = np.cumsum(profile) / profile.sum()
    first = int(np.searchsorted(cumulative, CROP_MASS_QUANTILE, side="right"))
    last = int(np.searchsorted(cumulative, 1.0 - CROP_MASS_QUANTILE, side="left"))
    return first, max(first, min(last, len(profile) - 1))


def fit_in_box(digit: np.ndarray, box: int) -> np.ndarray:
    """Scale so the longer side is `box` pixels, keeping the aspect ratio; brightest ink -> 1."""
    height, width = digit.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # Pillow takes (width, height)
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    resized = np.asarray(Image.fromarray(digit, mode="F").resize(size, resample), dtype=np.float32)
    resized = np.clip(resized, 0.0, None)
    peak = float(resized.max())
    return resized / peak if peak > 0 else resized


def centre_by_mass(digit: np.ndarray, size: int) -> np.ndarray:
    """Paste into a size x size field with the centre of mass at (size / 2, size / 2), inside the field."""
    height, width = digit.shape
    rows, columns = np.indices(digit.shape)
    mass = digit.sum()
    centre_row = float((rows * digit).sum() / mass)
    centre_column = float((columns * digit).sum() / mass)
    top = int(np.clip(round(size / 2 - centre_row), 0, size - height))
    left = int(np.clip(round(size / 2 - centre_column), 0, size - width))
    frame = np.zeros((size, size), dtype=np.float32)
    frame[top : top + height, left : left + width] = digit
    return frame
