"""The service's own PNG reader and writer (app.imaging.png_reader, png_writer) against Pillow, the reference.

The reader must give exactly Pillow's pixels for every file it reads and hand every other file to Pillow
(returning None), so that errors and the documented conversion rules stay Pillow's; the writer must produce
files that Pillow decodes to the very pixels written.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from app.errors import InvalidImage, PayloadTooLarge
from app.imaging.codecs import decode_image, decode_pixels, encode_png
from app.imaging.png_reader import read_plain_png
from app.imaging.png_writer import SMALL_PIXELS, write_png

SHAPES = [(1, 1), (28, 28), (7, 13), (64, 64), (33, 5)]


def pillow_png(pixels: np.ndarray, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", **options)
    return buffer.getvalue()


def random_pixels(shape: tuple[int, int], colour: bool, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(rng.integers(-9, 10, size=(*shape, 3) if colour else shape), axis=1)  # rows worth filtering
    return np.clip(smooth + 128, 0, 255).astype(np.uint8)


def files(colour: bool) -> list[bytes]:
    made = []
    for index, shape in enumerate(SHAPES):
        pixels = random_pixels(shape, colour, seed=index)
        made.append(write_png(pixels))
        for options in ({}, {"compress_level": 0}, {"compress_level": 9}, {"optimize": True}):
            made.append(pillow_png(pixels, **options))
    return made


@pytest.mark.parametrize("colour", [False, True], ids=["grayscale", "rgb"])
@pytest.mark.parametrize("channels", [None, 1, 3])
def test_plain_pngs_decode_to_pillows_pixels(colour: bool, channels: int | None) -> None:
    read_here = 0
    for data in files(colour):
        expected = np.asarray(decode_image(data, 10**6, channels))
        assert np.array_equal(decode_pixels(data, 10**6, channels), expected)
        read_here += read_plain_png(data) is not None
    assert read_here >= len(SHAPES)  # at least our own files took the fast path


def _filtered(row: np.ndarray, above: np.ndarray, kind: int, bpp: int) -> np.ndarray:
    """One row (int16 values) encoded with PNG filter `kind` (the specification's definitions, written out)."""
    left = np.concatenate([np.zeros(bpp, np.int16), row[:-bpp]])
    upper_left = np.concatenate([np.zeros(bpp, np.int16), above[:-bpp]])
    if kind == 1:  # Sub
        predicted = left
    elif kind == 2:  # Up
        predicted = above
    elif kind == 3:  # Average
        predicted = (left + above) // 2
    elif kind == 4:  # Paeth: whichever of left, above, upper-left is nearest to left + above - upper-left
        estimate = left + above - upper_left
        to_left, to_above, to_corner = abs(estimate - left), abs(estimate - above), abs(estimate - upper_left)
        predicted = np.where(
            (to_left <= to_above) & (to_left <= to_corner), left, np.where(to_above <= to_corner, above, upper_left)
        )
    else:  # None
        predicted = np.zeros_like(row)
    return (row - predicted) % 256


@pytest.mark.parametrize("colour", [False, True], ids=["grayscale", "rgb"])
def test_every_png_filter_is_rebuilt_exactly(colour: bool) -> None:
    """Rows filtered None, Sub, Up, Average and Paeth by hand (Pillow's encoder picks its own filters)."""
    pixels = random_pixels((11, 13), colour=colour, seed=5)
    bpp = 3 if colour else 1
    rows = pixels.reshape(11, 13 * bpp).astype(np.int16)
    raw = bytearray()
    for index, row in enumerate(rows):
        above = rows[index - 1] if index else np.zeros_like(row)
        kind = index % 5
        raw += bytes([kind]) + _filtered(row, above, kind, bpp).astype(np.uint8).tobytes()
    data = _png(13, 11, 2 if colour else 0, [zlib.compress(bytes(raw))])
    assert np.array_equal(read_plain_png(data), pixels)
    assert np.array_equal(read_plain_png(data), np.asarray(Image.open(io.BytesIO(data))))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _png(width: int, height: int, colour: int, idat: list[bytes], extra: list[bytes] | None = None) -> bytes:
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
    chunks = [header, *(extra or []), *(_chunk(b"IDAT", part) for part in idat), _chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def test_files_outside_the_plain_case_go_to_pillow() -> None:
    gray = random_pixels((8, 8), colour=False, seed=1)
    others = {
        "palette": _pillow_mode(gray, "P"),
        "alpha": _pillow_mode(gray, "LA"),
        "rgba": _pillow_mode(gray, "RGBA"),
        "16-bit": _pillow_mode(gray, "I;16"),
        "transparent colour": pillow_png(gray, transparency=0),
        "exif": _with_exif(gray),
        "text chunk": _png(8, 1, 0, [zlib.compress(bytes(9))], [_chunk(b"tEXt", b"Comment\x00hi")]),
    }
    for name, data in others.items():
        assert read_plain_png(data) is None, name
        assert np.array_equal(decode_pixels(data, 10**6, None), np.asarray(decode_image(data, 10**6, None))), name


def _pillow_mode(gray: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gray).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _with_exif(gray: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotated; Pillow turns the picture upright
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG", exif=exif)
    return buffer.getvalue()


def test_broken_files_are_left_to_pillow() -> None:
    """The reader declines them all; what the service then says is Pillow's verdict (an error, or the pixels
    Pillow makes of a damaged file), exactly as without the reader."""
    good = write_png(random_pixels((8, 8), colour=False, seed=2))
    bad_crc = bytearray(good)
    bad_crc[-20] ^= 0xFF  # inside the IDAT chunk
    cases = {
        "bad CRC": bytes(bad_crc),
        "truncated": good[:-20],
        "inflates to more than declared": _png(2, 2, 0, [zlib.compress(bytes(100))]),
        "inflates to less than declared": _png(8, 8, 0, [zlib.compress(bytes(9))]),
        "not zlib": _png(2, 2, 0, [b"not zlib at all"]),
        "unknown row filter": _png(2, 2, 0, [zlib.compress(bytes([5, 1, 2, 0, 3, 4]))]),
    }
    for name, data in cases.items():
        assert read_plain_png(data) is None, name
        assert _outcome(decode_pixels, data) == _outcome(decode_image, data), name
    with pytest.raises(InvalidImage):  # Pillow refuses this one: so does the service
        decode_pixels(cases["bad CRC"], 10**6, 1)


def _outcome(decode: Callable[..., object], data: bytes) -> object:
    try:
        return np.asarray(decode(data, 10**6, 1)).tolist()
    except InvalidImage as error:
        return ("InvalidImage", error.message)


def test_the_pixel_cap_is_checked_before_anything_is_inflated() -> None:
    bomb = _png(50_000, 50_000, 0, [zlib.compress(bytes(10**6))])  # declares 2.5 gigapixels
    with pytest.raises(PayloadTooLarge):
        decode_pixels(bomb, 10**6, 1)


@pytest.mark.parametrize("shape", [(28, 28), (3, 5), (20, 30, 3)])
def test_written_pngs_decode_to_the_pixels_written(shape: tuple[int, ...]) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(write_png(pixels)))), pixels)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(pixels)))), pixels)


def test_large_answers_are_encoded_by_pillow_for_smaller_files() -> None:
    photo = random_pixels((96, 96), colour=True, seed=3)
    assert photo.shape[0] * photo.shape[1] > SMALL_PIXELS
    encoded = encode_png(photo)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encoded))), photo)
    assert len(encoded) < len(write_png(photo))  # Pillow's adaptive filters: what the size threshold is for
