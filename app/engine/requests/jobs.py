"""What a request asks of the service and what it gets back, as plain typed objects (nothing of HTTP).

Routes build the inputs from HTTP (`app.http.uploads`, `app.http.routes.common`), the service
(`app.engine.service`) does the work and returns the results, and routes turn those into responses
(`app.http.responses`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

import numpy as np
import torch

from app.imaging.model_input import Preprocessing

# "tensor": decoded pixels from a tensor protocol (app.oip), in `ImageUpload.pixels` instead of `blobs`.
Source = Literal["multipart", "raw", "json", "tensor"]
OptionsT = TypeVar("OptionsT", covariant=True)
IMAGE_PART = "image"
IMAGES_FIELD = "images"
OPENAI_INPUT_FIELD = "input"


class Accounting(Protocol):
    """How the service reports which model serves a request and how many images it holds, once it knows.

    For HTTP requests that is the request's record (app.http.request_record), which counts the request
    against that model's admission (503 `overloaded` when that model could not serve it in time) and keeps
    both for the access log. Callers with nothing to account to (tests, scripts) use NO_ACCOUNTING."""

    def serving(self, model: str, images: int) -> None: ...


class NoAccounting:
    def serving(self, model: str, images: int) -> None:
        """Nothing to count and no access log to feed."""


NO_ACCOUNTING = NoAccounting()


@dataclass
class ImageUpload:
    """The images of one request, in request order, and the options that came in its body: encoded (`blobs`),
    or, from a tensor protocol, already pixels (`pixels`: (H, W, C) uint8 arrays, C = 1 or 3; blobs empty)."""

    blobs: list[bytes]
    source: Source
    fields: dict[str, Any]  # options found in the body (JSON fields or multipart text parts)
    json_field: str = IMAGES_FIELD  # the JSON field the images came in: `images`, or OpenAI's `input`
    bare_string: bool = False  # OpenAI's `input` as one string rather than a list
    pixels: list[np.ndarray] | None = None
    tensor_name: str = "IMAGE"  # for pixels: the input tensor they came in (error messages name it)

    @classmethod
    def of_pixels(cls, pixels: list[np.ndarray], tensor_name: str) -> ImageUpload:
        return cls([], "tensor", {}, pixels=pixels, tensor_name=tensor_name)

    @property
    def count(self) -> int:
        return len(self.pixels) if self.pixels is not None else len(self.blobs)

    @property
    def openai_input(self) -> bool:
        """Whether the images came as OpenAI's `input` (the answer then carries OpenAI's usage keys too)."""
        return self.source == "json" and self.json_field == OPENAI_INPUT_FIELD

    def param(self, index: int) -> str:
        """How a client names image `index` in its own request (for error messages)."""
        if self.source == "tensor":
            return f"{self.tensor_name}[{index}]"
        if self.source == "json":
            return self.json_field if self.bare_string else f"{self.json_field}[{index}]"
        return IMAGE_PART if self.source == "raw" else f"image[{index}]"


@dataclass(frozen=True)
class ImageJob(Generic[OptionsT]):
    """An image route's request once read: its images, its options (query and body merged) and where it
    was sent (the label of its stage metrics)."""

    upload: ImageUpload
    options: OptionsT
    route: str


@dataclass
class ImageResult:
    image: torch.Tensor  # (C, H, W) in [0, 1]
    preprocessing: Preprocessing | None = None  # for image routes: what was done to the input
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. reconstruction_error


@dataclass
class Images:
    """Images a model made: from images (denoise, super-resolve, reconstruct) or from latents (VAE)."""

    model: str
    results: list[ImageResult]
    seed: int | None = None  # the seed of /v1/vae/sample
    source_label: int | None = None  # /v1/vae/restyle: the digit the image shows (given or inferred)


@dataclass
class Embeddings:
    model: str
    vectors: torch.Tensor  # (n, D)
    preprocessing: list[Preprocessing]


@dataclass
class Posteriors:
    model: str
    means: torch.Tensor  # (n, D)
    log_variances: torch.Tensor  # (n, D)
    preprocessing: list[Preprocessing]


@dataclass
class Grid:
    """One picture of size x size decoded images (the latent manifold)."""

    model: str
    image: torch.Tensor  # (C, size * H, size * W)
    size: int


@dataclass
class LatentPoints:
    """Where test images land in a 2-D latent space: the latent map kept beside a VAE's weights."""

    model: str
    source: str  # which images were encoded, e.g. the first 5000 MNIST test digits
    x: list[float]  # z1 of each image's posterior mean
    y: list[float]  # z2
    labels: list[int]  # the class (digit) of each image
