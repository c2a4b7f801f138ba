"""Bringing pictures into the MNIST frame the way MNIST was made."""

from __future__ import annotations

import numpy as np
from drawn_digits import digit_photo, render_digit

from app.imaging.codecs import decode_image, image_to_array
from app.imaging.mnist_frame import otsu_threshold, to_mnist_frame


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    rows, columns = np.indices(image.shape)
    return float((rows * image).sum() / image.sum()), float((columns * image).sum() / image.sum())


def ink_box(image: np.ndarray, level: float = 0.05) -> tuple[int, int]:
    rows = np.flatnonzero(image.max(axis=1) > level)
    columns = np.flatnonzero(image.max(axis=0) > level)
    return int(rows[-1] - rows[0] + 1), int(columns[-1] - columns[0] + 1)


def test_a_photo_of_a_digit_on_paper_becomes_an_mnist_digit() -> None:
    photo = image_to_array(decode_image(digit_photo(7), 10**7))  # (160, 200), dark ink on light paper
    frame = to_mnist_frame(photo)
    assert frame.shape == (28, 28) and frame.dtype == np.float32
    assert frame.max() == 1.0  # strokes at full white, as in MNIST
    # Inverted, and the paper's texture and uneven light are gone: most of the field is exactly black
    # (MNIST digits leave about 80 % of it at 0), including every corner.
    assert (frame == 0).mean() > 0.6
    assert frame[:4, :4].max() == frame[:4, -4:].max() == frame[-4:, :4].max() == frame[-4:, -4:].max() == 0
    # Fitted in a 20x20 box keeping the aspect ratio (the 7 is taller than wide) ...
    height, width = ink_box(frame)
    assert 19 <= height <= 20 and width < height
    # ... and centred by its centre of mass.
    row, column = centre_of_mass(frame)
    assert abs(row - 14) <= 1 and abs(column - 14) <= 1


def test_white_on_black_pictures_are_not_inverted() -> None:
    big = render_digit(1, np.random.default_rng(0), size=84)  # white digit on black, 84x84
    frame = to_mnist_frame(big)
    assert frame[0, 0] == 0.0 and frame.max() == 1.0
    assert ink_box(frame)[0] >= 19  # the 1 is tall: its height is scaled to 20


def test_a_blank_picture_comes_out_black() -> None:
    assert to_mnist_frame(np.full((50, 40), 0.9, dtype=np.float32)).max() == 0.0
    assert to_mnist_frame(np.zeros((50, 40), dtype=np.float32)).max() == 0.0


def test_otsu_separates_two_levels() -> None:
    image = np.concatenate([np.full(100, 0.1), np.full(50, 0.8)]).astype(np.float32)
    threshold = otsu_threshold(image)
    assert np.array_equal(image > threshold, image == np.float32(0.8))
