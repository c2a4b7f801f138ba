"""Checks and conversions of a request's inputs around the model work: limits checked before any work,
latent vectors and embedding sizes checked, the pixels an upload declares (whether decoding leaves the
event loop), and pictures on the scale the noise estimator reads."""

from __future__ import annotations

import numpy as np
import torch

from app.engine.requests.jobs import ImageUpload
from app.errors import InvalidRequest, ValidationFailed
from app.imaging.codecs import INLINE_PIXELS, declared_pixels
from app.imaging.model_input import PreparedImage
from models.quality.noise_estimation import PATCH


def check_limit(value: int, limit: int, param: str) -> None:
    """Limits from settings are checked before any work (a 422 naming the field)."""
    if value > limit:
        raise ValidationFailed(f"{param} is {value}; the limit is {limit}", param=param)


def check_dimensions(model: str, dimensions: int | None, size: int | None) -> None:
    """OpenAI's `dimensions` asks for shorter vectors; an autoencoder's code has no order of importance to
    cut by, so only the model's own size is accepted (`size` None: not known yet, nothing to check)."""
    if dimensions is not None and size is not None and dimensions != size:
        raise ValidationFailed(
            f"model {model!r} makes vectors of {size} dimensions; 'dimensions' must be {size} or left out "
            "(its vectors are not truncated)",
            param="dimensions",
        )


def latents_tensor(latents: list[list[float]]) -> torch.Tensor:
    """JSON vectors -> (n, D); they must all have the same length."""
    lengths = {len(vector) for vector in latents}
    if len(lengths) != 1:
        raise ValidationFailed(f"latent vectors differ in length: {sorted(lengths)}", param="latents")
    return torch.tensor(latents, dtype=torch.float32)


def total_pixels(upload: ImageUpload) -> int | None:
    """The pixels all images declare in their headers; None (offload) when more than inline work or unreadable."""
    if upload.pixels is not None:  # a tensor protocol's pixels: their shapes say it
        count = sum(pixels.shape[0] * pixels.shape[1] for pixels in upload.pixels)
        return count if count <= INLINE_PIXELS else None
    total = 0
    for blob in upload.blobs:
        pixels = declared_pixels(blob)
        if pixels is None:
            return None
        total += pixels
        if total > INLINE_PIXELS:  # no need to read the other headers
            return None
    return total


def to_levels(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, C) on the 0..255 scale, what the noise estimator reads."""
    return (image.float() * 255.0).permute(1, 2, 0).numpy()


def require_estimable(prepared: list[PreparedImage]) -> None:
    """The estimator reads 7x7 patches: a smaller picture without `sigma` is the client's to fix (a 400)."""
    for index, item in enumerate(prepared):
        height, width = item.tensor.shape[-2:]
        if min(height, width) < PATCH:
            raise InvalidRequest(
                f"image {index} is {width}x{height} pixels: estimating its noise level needs at least "
                f"{PATCH}x{PATCH}; send a larger picture or give the noise level in `sigma` (0 to 75)",
                param="sigma",
            )
