"""What each method sends and how its answer is read, shared by the sync and async clients.

Every image route is called with a JSON body (images as base64) and `response_format=json`, so one
request carries any number of images and the answer keeps them apart, in the order they were sent.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
import numpy as np
from PIL import Image

from aeclient.images import ImageInput, decode_b64_png, decode_png, encode_images

T = TypeVar("T")
Images = ImageInput | list[ImageInput] | tuple[ImageInput, ...]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP request and the function that reads its successful answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reconstruction:
    images: list[Image.Image]
    errors: np.ndarray  # (N,) the server's per-image reconstruction error (an anomaly score)


@dataclass(frozen=True)
class Posterior:
    mean: np.ndarray  # (N, latent_size)
    log_variance: np.ndarray  # (N, latent_size)


def _without_none(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _image_list(response: httpx.Response) -> list[Image.Image]:
    return [decode_b64_png(item["b64_png"]) for item in response.json()["data"]]


def _image_body(images: Images, model: str | None, preprocess: str, **extra: Any) -> dict[str, Any]:
    return _without_none(
        images=encode_images(images), model=model, preprocess=preprocess, response_format="json", **extra
    )


def denoise(images: Images, model: str | None, preprocess: str) -> Call[list[Image.Image]]:
    return Call("POST", "/v1/denoise", _image_list, json=_image_body(images, model, preprocess))


def super_resolve(
    images: Images, model: str | None, preprocess: str, scale: int | None = None
) -> Call[list[Image.Image]]:
    """scale: the upscaling factor; without a model the server picks one that has it."""
    return Call("POST", "/v1/super-resolve", _image_list, json=_image_body(images, model, preprocess, scale=scale))


def _reconstruction(response: httpx.Response) -> Reconstruction:
    data = response.json()["data"]
    errors = np.array([item["reconstruction_error"] for item in data], dtype=np.float64)
    return Reconstruction(images=[decode_b64_png(item["b64_png"]) for item in data], errors=errors)


def reconstruct(images: Images, model: str | None, preprocess: str) -> Call[Reconstruction]:
    return Call("POST", "/v1/reconstruct", _reconstruction, json=_image_body(images, model, preprocess))


def _vector(value: list[float] | str) -> np.ndarray:
    if isinstance(value, str):  # encoding_format=base64: little-endian float32 bytes
        return np.frombuffer(base64.b64decode(value), dtype="<f4").astype(np.float32)
    return np.asarray(value, dtype=np.float32)


def _embeddings(response: httpx.Response) -> np.ndarray:
    items = sorted(response.json()["data"], key=lambda item: item["index"])
    return np.stack([_vector(item["embedding"]) for item in items])  # (N, D)


def embed(
    images: Images, model: str | None, preprocess: str, normalize: bool, encoding_format: str
) -> Call[np.ndarray]:
    body = _without_none(
        images=encode_images(images),
        model=model,
        preprocess=preprocess,
        normalize=normalize,
        encoding_format=encoding_format,
    )
    return Call("POST", "/v1/embeddings", _embeddings, json=body)


Labels = int | Sequence[int] | None


def _labels(label: Labels) -> int | list[int] | None:
    return label if label is None or isinstance(label, int) else [int(value) for value in label]


def vae_sample(
    n: int, seed: int | None, temperature: float, model: str | None, label: Labels = None
) -> Call[list[Image.Image]]:
    body = _without_none(
        n=n, seed=seed, temperature=temperature, model=model, label=_labels(label), response_format="json"
    )
    return Call("POST", "/v1/vae/sample", _image_list, json=body)


def _latent_rows(latents: np.ndarray | Sequence[Sequence[float]]) -> list[list[float]]:
    array = np.asarray(latents, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"latents are (N, latent_size); got shape {array.shape}")
    return array.tolist()


def vae_decode(
    latents: np.ndarray | Sequence[Sequence[float]], model: str | None, label: Labels = None
) -> Call[list[Image.Image]]:
    body = _without_none(latents=_latent_rows(latents), model=model, label=_labels(label), response_format="json")
    return Call("POST", "/v1/vae/decode", _image_list, json=body)


def vae_restyle(
    image: ImageInput, labels: Sequence[int] | None, source_label: int | None, model: str | None, preprocess: str
) -> Call[list[Image.Image]]:
    """One digit drawn as each of `labels` (every label when None), in its handwriting."""
    body = _image_body(
        image, model, preprocess, labels=None if labels is None else [int(v) for v in labels], source_label=source_label
    )
    return Call("POST", "/v1/vae/restyle", _image_list, json=body)


def _posterior(response: httpx.Response) -> Posterior:
    items = sorted(response.json()["data"], key=lambda item: item["index"])
    return Posterior(
        mean=np.array([item["mean"] for item in items], dtype=np.float32),
        log_variance=np.array([item["log_variance"] for item in items], dtype=np.float32),
    )


def vae_encode(images: Images, model: str | None, preprocess: str) -> Call[Posterior]:
    body = _without_none(images=encode_images(images), model=model, preprocess=preprocess)
    return Call("POST", "/v1/vae/encode", _posterior, json=body)


def vae_interpolate(
    start: ImageInput | None,
    end: ImageInput | None,
    latents: np.ndarray | Sequence[Sequence[float]] | None,
    steps: int,
    model: str | None,
) -> Call[list[Image.Image]]:
    """Between two images (start, end) or two latent vectors (latents), never both."""
    if latents is not None:
        if start is not None or end is not None:
            raise ValueError("give two images or two latents, not both")
        body = _without_none(latents=_latent_rows(latents), steps=steps, model=model, response_format="json")
    else:
        if start is None or end is None:
            raise ValueError("give two images (start, end) or latents")
        body = _without_none(images=encode_images([start, end]), steps=steps, model=model, response_format="json")
    return Call("POST", "/v1/vae/interpolate", _image_list, json=body)


def vae_manifold(size: int, extent: float, model: str | None) -> Call[Image.Image]:
    params = _without_none(size=size, range=extent, model=model)
    return Call("GET", "/v1/vae/manifold", lambda response: decode_png(response.content), params=params)


def models() -> Call[list[dict[str, Any]]]:
    return Call("GET", "/v1/models", lambda response: list(response.json()["data"]))


def model(name: str) -> Call[dict[str, Any]]:
    return Call("GET", f"/v1/models/{name}", lambda response: dict(response.json()))


def health() -> Call[dict[str, Any]]:
    return Call("GET", "/healthz", lambda response: dict(response.json()))
