"""The soak run's schedule: a fixed, seeded list of mixed requests, valid and hostile (images of every
size and format, pixel bombs, malformed bodies), and the inputs they carry."""

from __future__ import annotations

import base64
import io
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

JSON = "application/json"


@dataclass(frozen=True)
class Call:
    """One request of the schedule: `kind` names it in the report; `valid` says whether a 2xx is expected."""

    kind: str
    valid: bool
    method: str
    path: str
    options: dict[str, Any]


# -- the inputs --------------------------------------------------------------------------------------


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def random_images(rng: np.random.Generator, count: int, height: int, width: int, channels: int = 1) -> list[bytes]:
    """Grey blobs on black: a stroke-like bright region plus noise, so models see something digit-sized."""
    images = []
    for _ in range(count):
        canvas = rng.normal(0, 25, size=(height, width)).clip(0, 255)
        top, left = rng.integers(0, max(1, height // 3)), rng.integers(0, max(1, width // 3))
        canvas[top : top + height // 2, left : left + width // 6 + 1] += 200
        pixels = canvas.clip(0, 255).astype(np.uint8)
        images.append(png(np.stack([pixels] * 3, axis=-1) if channels == 3 else pixels))
    return images


def pixel_bomb(width: int = 60000, height: int = 60000) -> bytes:
    """A valid PNG header that claims width x height pixels; the body is a few bytes (refused from the header)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + header
    ihdr = struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    data = zlib.compress(b"\x00" * 1024)
    idat = struct.pack(">I", len(data)) + b"IDAT" + data + struct.pack(">I", zlib.crc32(b"IDAT" + data))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat


def multipart(images: list[bytes], **fields: str) -> dict[str, Any]:
    return {"files": [("image", (f"img{i}.png", blob, "image/png")) for i, blob in enumerate(images)], "data": fields}


def build_schedule(count: int, seed: int, max_body_bytes: int, latent_size: int = 16) -> list[Call]:
    """`count` calls drawn with fixed weights from the kinds below (about 70% valid, 30% hostile).

    `latent_size` is that of the default VAE (16 for the shipped mnist-vae), for valid /v1/vae/decode bodies."""
    rng = np.random.default_rng(seed)
    digits = random_images(rng, 64, 28, 28)
    small = random_images(rng, 32, 14, 14)  # the x2 super-resolution model reads 14x14
    photos = [jpeg(rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)) for _ in range(8)]  # framed to 28x28
    oversized = b"\x00" * (max_body_bytes + 4096)
    bomb = pixel_bomb()

    def b64(blobs: list[bytes]) -> list[str]:
        return [base64.b64encode(blob).decode("ascii") for blob in blobs]

    picker = random.Random(seed)  # a reproducible schedule, not a secret

    def truncated() -> bytes:
        return picker.choice(digits)[: picker.randrange(8, 60)]

    two_latents = [[0.1] * latent_size, [-0.2] * latent_size]

    def seeded_sample() -> dict[str, Any]:
        return {"json": {"n": 4, "seed": picker.randrange(1000)}}

    kinds: list[tuple[str, bool, float, Callable[[], tuple[str, str, dict[str, Any]]]]] = [
        # valid
        ("denoise raw png", True, 16, lambda: ("POST", "/v1/denoise", raw(picker.choice(digits)))),
        ("denoise multipart x4", True, 8, lambda: ("POST", "/v1/denoise", multipart(picker.sample(digits, 4)))),
        ("denoise jpeg framed", True, 3, lambda: ("POST", "/v1/denoise", raw(picker.choice(photos), "image/jpeg"))),
        ("super-resolve", True, 6, lambda: ("POST", "/v1/super-resolve", raw(picker.choice(small)))),
        ("reconstruct json", True, 5, lambda: ("POST", "/v1/reconstruct", {"json": {"images": b64([digits[0]])}})),
        ("embeddings json x8", True, 10, lambda: ("POST", "/v1/embeddings", {"json": {"images": b64(digits[:8])}})),
        ("vae encode", True, 4, lambda: ("POST", "/v1/vae/encode", raw(picker.choice(digits)))),
        ("vae sample n=4", True, 8, lambda: ("POST", "/v1/vae/sample", seeded_sample())),
        ("vae decode", True, 3, lambda: ("POST", "/v1/vae/decode", {"json": {"latents": two_latents}})),
        ("manifold 5x5", True, 1, lambda: ("GET", "/v1/vae/manifold?size=5", {})),
        ("models", True, 4, lambda: ("GET", "/v1/models", {})),
        # hostile
        ("corrupt png", False, 4, lambda: ("POST", "/v1/denoise", raw(truncated()))),
        ("garbage bytes", False, 3, lambda: ("POST", "/v1/denoise", raw(picker.randbytes(picker.randrange(1, 2000))))),
        ("pixel bomb", False, 2, lambda: ("POST", "/v1/denoise", raw(bomb))),
        ("bad json", False, 4, lambda: ("POST", "/v1/embeddings", text('{"images": ["abc"', JSON))),
        ("bad base64", False, 2, lambda: ("POST", "/v1/embeddings", {"json": {"images": ["not base64!"]}})),
        ("wrong json shape", False, 2, lambda: ("POST", "/v1/vae/sample", {"json": {"n": "many", "extra": 1}})),
        ("NaN latent", False, 2, lambda: ("POST", "/v1/vae/decode", text('{"latents": [[NaN, 1.0]]}', JSON))),
        ("unknown model", False, 4, lambda: ("POST", "/v1/denoise?model=no-such-model", raw(digits[1]))),
        ("path in model name", False, 1, lambda: ("POST", "/v1/denoise?model=../../etc", raw(digits[2]))),
        ("n over the limit", False, 1, lambda: ("POST", "/v1/vae/sample", {"json": {"n": 100000}})),
        ("wrong content type", False, 2, lambda: ("POST", "/v1/denoise", text("hello", "text/plain"))),
        ("oversized body", False, 1, lambda: ("POST", "/v1/denoise", raw(oversized))),
    ]
    weights = [weight for _, _, weight, _ in kinds]
    schedule = []
    for kind, valid, _, make in picker.choices(kinds, weights=weights, k=count):
        method, path, options = make()
        schedule.append(Call(kind, valid, method, path, options))
    return schedule


def raw(body: bytes, content_type: str = "image/png") -> dict[str, Any]:
    return {"content": body, "headers": {"content-type": content_type}}


def text(body: str, content_type: str) -> dict[str, Any]:
    return {"content": body.encode(), "headers": {"content-type": content_type}}
