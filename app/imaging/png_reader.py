"""A PNG reader for the plain case: 8-bit grayscale or RGB, not interlaced.

Why: decoding a 28x28 digit with Pillow costs ~45 µs, most of it Python around a few microseconds of zlib
(plugin lookup, `ImageFile.__init__`, the chunk reader, `load`, the EXIF check). Clients that send such
digits mostly make them with Pillow, OpenCV or libpng, whose small grayscale files are usually in this plain
form; reading it here is a chunk walk, one bounded `zlib` call and a few vectorised row sums. Rows filtered
Average or Paeth (Pillow's adaptive filtering picks them for about a quarter of noisy digits) need a
sequential rebuild per pixel: once the stream has inflated to exactly the declared rows, Pillow's own C
decoder rebuilds them (`Image.frombytes` with the "zip" decoder PNG files use), without its file plumbing:
20 against 42 µs for such a digit.

Anything else returns None and goes to Pillow (app.imaging.codecs), which applies the documented rules:
other bit depths and colour types (palette, alpha), interlacing, transparency (tRNS), EXIF or text chunks
(EXIF orientation can hide in text), animation, and every malformed file: a bad CRC, a truncated chunk, a
stream that inflates to more or less than the rows it declares, an unknown row filter. So whatever this
returns is the image Pillow would have returned.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image

from app.imaging.png_writer import SIGNATURE

# Ancillary chunks that do not change the pixels Pillow returns (colour-space and physical-size notes).
HARMLESS_CHUNKS = frozenset({b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"pHYs", b"sBIT", b"tIME", b"bKGD"})
_CHANNELS = {0: 1, 2: 3}  # PNG colour type -> channels: grayscale, truecolour
_NONE, _SUB, _UP, _PAETH = 0, 1, 2, 4
_MODES = {1: "L", 3: "RGB"}


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None when `data` does not start like a PNG."""
    if len(data) < 24 or data[:8] != SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return int(width), int(height)


def read_plain_png(data: bytes) -> np.ndarray | None:
    """(H, W) or (H, W, 3) uint8 pixels of a plain PNG (see the module docstring), else None."""
    if png_size(data) is None:
        return None
    header, compressed = _chunks(data)
    if header is None or not compressed:
        return None
    width, height, depth, colour, compression, filter_method, interlace = header
    if depth != 8 or colour not in _CHANNELS or compression or filter_method or interlace or not width or not height:
        return None
    channels = _CHANNELS[colour]
    row_bytes = width * channels
    expected = height * (row_bytes + 1)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(compressed, expected)  # bounded: a "zip bomb" stops at the size declared
    except zlib.error:
        return None
    if len(raw) != expected or inflater.unconsumed_tail or not inflater.eof:
        return None
    filters = raw[:: row_bytes + 1]  # each row's first byte, as bytes: cheaper to scan than an array
    if max(filters) > _PAETH:
        return None  # not a PNG filter: Pillow names the error
    if max(filters) > _UP:  # Average or Paeth rows: Pillow's decoder rebuilds the same, checked, stream
        mode = _MODES[channels]
        return np.asarray(Image.frombytes(mode, (width, height), compressed, "zip", mode, 0))
    pixels = np.frombuffer(raw, dtype=np.uint8).reshape(height, row_bytes + 1)[:, 1:].copy()
    for row, kind in enumerate(filters):  # rows are rebuilt top to bottom: Up reads the row above, rebuilt
        if kind == _SUB:  # each byte adds the one a pixel to its left: a running sum per channel
            pixels[row] = pixels[row].reshape(width, channels).cumsum(axis=0, dtype=np.uint8).reshape(-1)
        elif kind == _UP and row > 0:  # adds the byte above (the first row has zeros above it)
            pixels[row] += pixels[row - 1]
    return pixels.reshape(height, width) if channels == 1 else pixels.reshape(height, width, 3)


def _chunks(data: bytes) -> tuple[tuple[int, ...] | None, bytes]:
    """(the IHDR fields, the IDAT data joined) of a file with only known chunks and good CRCs, else (None, b"")."""
    position, header, parts = len(SIGNATURE), None, []
    while position + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        end = position + 8 + length
        if end + 4 > len(data):
            return None, b""
        body = data[position + 8 : end]
        if zlib.crc32(body, zlib.crc32(kind)) != struct.unpack_from(">I", data, end)[0]:
            return None, b""
        if kind == b"IHDR" and header is None and length == 13:
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT" and header is not None:
            parts.append(body)
        elif kind == b"IEND":
            return header, b"".join(parts)
        elif kind not in HARMLESS_CHUNKS:
            return None, b""
        position = end + 4
    return None, b""  # no IEND: truncated
