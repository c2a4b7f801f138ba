"""Image decoding: formats, modes, orientation, the pixel cap, and refusal of what is not an image."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.errors import InvalidImage, PayloadTooLarge
from app.imaging.codecs import decode_image, encode_png, tile_grid

MAX_PIXELS = 1_000_000


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def gradient(width: int = 40, height: int = 30) -> Image.Image:
    values = np.linspace(0, 255, width * height).reshape(height, width).round().astype(np.uint8)
    return Image.fromarray(values, mode="L")


@pytest.mark.parametrize(
    ("fmt", "tolerance"), [("PNG", 0), ("BMP", 0), ("TIFF", 0), ("GIF", 1), ("JPEG", 6), ("WEBP", 6)]
)
def test_every_format_decodes_to_the_same_pixels(fmt: str, tolerance: int) -> None:
    original = gradient()
    decoded = decode_image(encode(original, fmt), MAX_PIXELS)
    assert decoded.mode == "L" and decoded.size == original.size
    difference = np.abs(np.asarray(decoded, dtype=int) - np.asarray(original, dtype=int))
    assert difference.mean() <= tolerance


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("L", (16, 16), 250), Image.new("L", (16, 16), 5)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert np.asarray(decode_image(data, MAX_PIXELS)).mean() > 200


def test_exif_orientation_is_applied() -> None:
    image = Image.new("L", (40, 20), 0)
    image.paste(255, (0, 0, 10, 20))  # a white band on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    decoded = np.asarray(decode_image(encode(image, "JPEG", exif=exif, quality=95), MAX_PIXELS))
    assert decoded.shape == (40, 20)  # (height, width): portrait once upright
    assert decoded[:10].mean() > 200 and decoded[-10:].mean() < 50  # the left band is now on top


def test_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # fully transparent
    rgba.putpixel((3, 3), (0, 0, 0, 255))  # one opaque black dot
    decoded = np.asarray(decode_image(encode(rgba, "PNG"), MAX_PIXELS))
    assert decoded[0, 0] == 255 and decoded[3, 3] == 0
    la = Image.new("LA", (4, 4), (0, 0))
    assert np.asarray(decode_image(encode(la, "PNG"), MAX_PIXELS)).min() == 255


def test_palette_with_a_transparent_colour_is_composited_on_white() -> None:
    palette_image = Image.new("P", (4, 4), 0)
    palette_image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    data = encode(palette_image, "PNG", transparency=0)  # index 0 (black) is transparent
    assert np.asarray(decode_image(data, MAX_PIXELS)).min() == 255


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits() -> None:
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    data = encode(image, "PNG")
    assert np.asarray(decode_image(data, MAX_PIXELS)).tolist() == [[0, 100, 255]]


def test_cmyk_goes_through_rgb_to_grayscale() -> None:
    cmyk = Image.new("CMYK", (4, 4), (0, 0, 0, 255))  # full black ink
    assert np.asarray(decode_image(encode(cmyk, "JPEG"), MAX_PIXELS)).max() < 20
    paper = Image.new("CMYK", (4, 4), (0, 0, 0, 0))  # no ink
    assert np.asarray(decode_image(encode(paper, "TIFF"), MAX_PIXELS)).min() > 235


def test_bilevel_and_rgb_modes() -> None:
    bilevel = Image.new("1", (4, 4), 1)
    assert np.asarray(decode_image(encode(bilevel, "PNG"), MAX_PIXELS)).min() == 255
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    assert np.asarray(decode_image(encode(red, "PNG"), MAX_PIXELS))[0, 0] == 76  # ITU-R 601 luma of red
    assert decode_image(encode(red, "PNG"), MAX_PIXELS, channels=3).mode == "RGB"


def test_the_pixel_cap_is_checked_from_the_header_before_decoding() -> None:
    # A PNG whose header claims 100000 x 100000 pixels and whose pixel data is cut off:
    # only a header check can refuse it as too large rather than as broken.
    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 100))
    with pytest.raises(PayloadTooLarge, match="limit"):
        decode_image(png, MAX_PIXELS)
    with pytest.raises(PayloadTooLarge):
        decode_image(encode(gradient(40, 30), "PNG"), max_pixels=40 * 30 - 1)
    assert decode_image(encode(gradient(40, 30), "PNG"), max_pixels=40 * 30).size == (40, 30)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"definitely not an image",
        encode(gradient(), "PNG")[:60],  # truncated
        encode(gradient(), "PPM"),  # a real image in a format that is not accepted
    ],
    ids=["empty", "text", "truncated-png", "ppm"],
)
def test_what_is_not_an_accepted_image_is_invalid(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        decode_image(data, MAX_PIXELS, param="image[3]")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512), st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00", b"\xff\xd8"]))
def test_arbitrary_bytes_never_escape_as_unexpected_errors(payload: bytes, magic: bytes) -> None:
    try:
        image = decode_image(magic + payload, MAX_PIXELS)
    except (InvalidImage, PayloadTooLarge):
        return
    assert image.mode == "L"


def test_tile_grid_is_row_major() -> None:
    import torch

    tiles = torch.stack([torch.full((1, 2, 2), float(i) / 4) for i in range(5)])  # (5, 1, 2, 2)
    grid = tile_grid(tiles, columns=3)
    assert grid.shape == (1, 4, 6)
    assert grid[0, 0, 4].item() == 0.5 and grid[0, 2, 2].item() == 1.0 and grid[0, 2, 4].item() == 0.0
    assert encode_png(Image.new("L", (3, 3))).startswith(b"\x89PNG")
