"""A corpus of hostile and awkward requests, generated in code (no binary blobs in the repository).

Each case is (name, method, path, keyword arguments for httpx). None of them may make the server
answer 5xx or fall over; many are valid images in unusual forms that it should simply serve.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image

Case = tuple[str, str, str, dict[str, Any]]


def _digit(size: int = 28) -> np.ndarray:
    """A bright stroke on black, (size, size) uint8."""
    image = np.zeros((size, size), dtype=np.uint8)
    image[size // 4 : 3 * size // 4, size // 2 - 2 : size // 2 + 2] = 255
    return image


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_with_header(width: int, height: int, bit_depth: int = 8, colour: int = 0, data: bytes = b"") -> bytes:
    """A PNG whose IHDR says width x height, followed by `data` as its only IDAT (often far too little)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    idat = _png_chunk(b"IDAT", zlib.compress(data or b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + idat + _png_chunk(b"IEND", b"")


def images() -> dict[str, bytes]:
    """Awkward image files by name."""
    digit = Image.fromarray(_digit())
    frames = [Image.fromarray(np.roll(_digit(), shift, axis=1)) for shift in range(3)]
    png = _encode(digit, "PNG")
    corrupt = bytearray(png)
    corrupt[len(png) // 2 : len(png) // 2 + 16] = b"\xa5" * 16  # IDAT bytes flipped, CRC now wrong
    sixteen_bit = Image.fromarray(_digit().astype(np.uint16) * 257)
    return {
        "png": png,
        "truncated-png": png[: len(png) // 2],
        "corrupt-png": bytes(corrupt),
        "empty": b"",
        "zero-width-png": png_with_header(0, 28),
        "zero-both-png": png_with_header(0, 0),
        "bomb-png": png_with_header(100_000, 100_000),  # 10^10 pixels claimed, a few bytes sent
        "bomb-wide-png": png_with_header(2**31 - 1, 1),
        "animated-gif": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], loop=0),
        "animated-webp": _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
        "apng": _encode(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        "sixteen-bit-png": _encode(sixteen_bit, "PNG"),
        "cmyk-jpeg": _encode(digit.convert("CMYK"), "JPEG"),
        "cmyk-tiff": _encode(digit.convert("CMYK"), "TIFF"),
        "palette-png": _encode(digit.convert("P"), "PNG"),
        "palette-transparent-png": _encode(digit.convert("P"), "PNG", transparency=0),
        "multi-frame-tiff": _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
        "rgba-png": _encode(digit.convert("RGBA"), "PNG"),
        "one-pixel-png": _encode(Image.new("L", (1, 1)), "PNG"),
        "tall-thin-png": _encode(Image.new("L", (1, 4000)), "PNG"),
        "bmp": _encode(digit, "BMP"),
        "ppm": _encode(digit, "PPM"),  # a real image in a format that is not accepted
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg"><rect width="28" height="28"/></svg>',
        "text": b"definitely not an image",
        "zip-header": b"PK\x03\x04" + b"\x00" * 100,
        "pickle": b"\x80\x04\x95" + b"cos\nsystem\n(S'echo pwned'\ntR.",
    }


IMAGE_ROUTES = ["/v1/denoise", "/v1/reconstruct", "/v1/embeddings", "/v1/vae/encode", "/v1/super-resolve"]
MODEL_NAMES = [
    "../x",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "/etc/passwd",
    "http://evil.example/m.safetensors",
    "file:///etc/passwd",
    "tiny-ae/../tiny-ae",
    "C:\\x",
    "a" * 5000,
    "",
    " ",
    "\u202etiny-ae",
    "tiny-ae%00",
]


def cases() -> list[Case]:
    corpus: list[Case] = []
    files = images()
    for name, data in files.items():
        for route in IMAGE_ROUTES:
            corpus.append(
                (f"{route} multipart {name}", "POST", route, {"files": [("image", ("x", data, "image/png"))]})
            )
        corpus.append(
            (f"raw {name}", "POST", "/v1/denoise", {"content": data, "headers": {"content-type": "image/png"}})
        )
        b64 = base64.b64encode(data).decode()
        corpus.append((f"json {name}", "POST", "/v1/embeddings", {"json": {"images": [b64]}}))

    png = files["png"]
    b64_png = base64.b64encode(png).decode()
    # Wrong base64 and data URLs
    for text in [
        "!!!!",
        "YWJj=",
        "====",
        "\u00e9\u00e9",
        "data:image/png;base64,",
        "data:text/html,<b>x</b>",
        b64_png[:-3],
        " " + b64_png,
        b64_png + "\n" * 100,
    ]:
        corpus.append((f"base64 {text[:12]!r}", "POST", "/v1/denoise", {"json": {"images": [text]}}))
    # Mismatched content types
    mismatched = [
        ("png as jpeg", png, "image/jpeg"),
        ("png as text", png, "text/plain"),
        ("png as json", png, "application/json"),
        ("json as png", b'{"images": []}', "image/png"),
        ("png as form", png, "application/x-www-form-urlencoded"),
        ("png as multipart without boundary", png, "multipart/form-data"),
        ("png as xml", png, "application/xml"),
        ("no content type", png, ""),
        ("charset soup", png, 'image/png; charset="; boundary=;;;'),
    ]
    for label, body, kind in mismatched:
        for route in ("/v1/denoise", "/v1/vae/sample"):
            corpus.append((f"{route} {label}", "POST", route, {"content": body, "headers": {"content-type": kind}}))
    # JSON of the wrong shape
    for body in [
        None,
        1,
        "x",
        [],
        [png.hex()],
        {"images": None},
        {"images": "abc"},
        {"images": [[1, 2]]},
        {"images": [{"b64": b64_png}]},
        {"images": [b64_png] * 200},
        {"images": [b64_png], "model": 5},
        {"images": [b64_png], "preprocess": "maybe"},
        {"images": [b64_png], "extra": {"deep": [[[[]]]]}},
        {"n": {"$gt": 0}},
        {"a" * 1000: 1},
        json.loads("[" * 200 + "]" * 200),
    ]:
        for route in ("/v1/denoise", "/v1/vae/sample", "/v1/vae/decode", "/v1/vae/interpolate"):
            corpus.append((f"{route} json {str(body)[:20]}", "POST", route, {"json": body}))
    # Huge or odd numbers
    for n in [0, -1, 10**6, 2**63, 1e308, "NaN", 1.5, True]:
        corpus.append((f"sample n={n}", "POST", "/v1/vae/sample", {"json": {"n": n}}))
    for temperature in [-1, 0, 1e308, "inf", 1e-320]:
        corpus.append(
            (f"sample t={temperature}", "POST", "/v1/vae/sample", {"json": {"n": 1, "temperature": temperature}})
        )
    for seed in [-1, 2**64, 2**200]:
        corpus.append((f"sample seed={seed}", "POST", "/v1/vae/sample", {"json": {"n": 1, "seed": seed}}))
    for steps in [0, 1, 10**6, -5]:
        corpus.append(
            (
                f"interpolate steps={steps}",
                "POST",
                "/v1/vae/interpolate",
                {"json": {"start": [0, 0], "end": [1, 1], "steps": steps}},
            )
        )
    for size in ["0", "-1", "1000000", "1e9", "abc", "3.5"]:
        corpus.append((f"manifold size={size}", "GET", "/v1/vae/manifold", {"params": {"size": size}}))
    for extent in ["nan", "inf", "-inf", "1e308", "-3", "0"]:
        corpus.append((f"manifold range={extent}", "GET", "/v1/vae/manifold", {"params": {"range": extent}}))
    # NaN, infinite and huge latents (JSON has no NaN, but Python's encoder writes it and some clients do)
    for value in ["NaN", "Infinity", "-Infinity", "1e308", "1e39", "-1e39", "1e400"]:
        body = f'{{"latents": [[{value}, 0]]}}'.encode()
        corpus.append(
            (
                f"decode {value}",
                "POST",
                "/v1/vae/decode",
                {"content": body, "headers": {"content-type": "application/json"}},
            )
        )
        body = f'{{"start": [{value}, 0], "end": [0, 0], "steps": 3}}'.encode()
        corpus.append(
            (
                f"interpolate {value}",
                "POST",
                "/v1/vae/interpolate",
                {"content": body, "headers": {"content-type": "application/json"}},
            )
        )
    for latents in [[], [[]], [[0.0] * 10_000], [[0.0, 0.0]] * 10_000, [[[0.0]]], [0, 0]]:
        corpus.append((f"decode shape {str(latents)[:20]}", "POST", "/v1/vae/decode", {"json": {"latents": latents}}))
    # Path-like, URL-like and absurd model names, in the query, the body and the path
    for model in MODEL_NAMES:
        corpus.append(
            (
                f"query model {model[:20]!r}",
                "POST",
                "/v1/denoise",
                {"params": {"model": model}, "files": [("image", ("x", png, "image/png"))]},
            )
        )
        corpus.append((f"json model {model[:20]!r}", "POST", "/v1/vae/sample", {"json": {"n": 1, "model": model}}))
        corpus.append((f"path model {model[:20]!r}", "GET", f"/v1/models/{model}", {}))
    # Methods and paths
    for method, path in [
        ("DELETE", "/v1/models/tiny-ae"),
        ("PUT", "/v1/denoise"),
        ("GET", "/v1/denoise"),
        ("POST", "/v1/models/tiny-ae/load"),
        ("POST", "/v1/models/reload"),
        ("GET", "/../../etc/passwd"),
        ("GET", "/v1/%00"),
        ("GET", "/" + "a" * 4000),
        ("OPTIONS", "/v1/denoise"),
        ("HEAD", "/healthz"),
    ]:
        corpus.append((f"{method} {path[:30]}", method, path, {}))
    # Headers
    for headers in [
        {"x-request-id": "a" * 5000},
        {"authorization": "Bearer " + "x" * 8000},
        {"accept": "application/xml"},
        {"content-type": "multipart/form-data; boundary=" + "-" * 200},
    ]:
        corpus.append((f"headers {next(iter(headers))}", "POST", "/v1/denoise", {"content": png, "headers": headers}))
    # Numbered, since the labels shorten long values and so may repeat.
    return [(f"{i:03d} {name}", method, path, options) for i, (name, method, path, options) in enumerate(corpus)]
