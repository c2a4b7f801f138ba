"""Small helpers shared by the service tests."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import numpy as np
import torch
from drawn_digits import decode_png, png_bytes


def multipart(*images: bytes, content_type: str = "image/png") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("image", (f"digit{i}.png", image, content_type)) for i, image in enumerate(images)]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def json_images(response: httpx.Response) -> list[np.ndarray]:
    """The images of a JSON image response, as (H, W) float arrays."""
    body = response.json()
    return [decode_png(base64.b64decode(item["b64_png"])) for item in body["data"]]


def pngs(batch: torch.Tensor) -> list[bytes]:
    return [png_bytes(image) for image in batch]


def quantised(batch: torch.Tensor) -> np.ndarray:
    """What the server sees of a batch sent as PNGs: (N, H, W) floats rounded to 8 bits."""
    return np.stack([decode_png(data) for data in pngs(batch)])


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))


def assert_error(response: httpx.Response, status: int, type_: str | None = None) -> dict[str, Any]:
    """The response is the service's error shape with this status (and type); returns the error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"type", "message", "param"}
    assert isinstance(error["message"], str) and error["message"]
    if type_ is not None:
        assert error["type"] == type_, error
    return dict(error)
