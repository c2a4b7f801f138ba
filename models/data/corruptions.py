"""Image corruptions with explicit parameters and seeds. Images are (B, C, H, W) floats in [0, 1]."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def gaussian_noise(
    images: torch.Tensor,
    sigma: float | torch.Tensor,
    mean: float = 0.0,
    clip: bool = True,
    seed: int | None = None,
) -> torch.Tensor:
    """images + mean + sigma * N(0, 1), optionally clipped to [0, 1].

    `sigma` is a number or a per-image tensor of shape (B,). The lesson's variant uses mean=0.5
    (which also brightens the image); the standard one is mean=0.
    """
    generator = _generator(seed, images.device)
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    if isinstance(sigma, torch.Tensor):
        sigma = sigma.to(images).view(-1, *([1] * (images.dim() - 1)))
    noisy = images + mean + sigma * noise
    return noisy.clamp(0.0, 1.0) if clip else noisy


def blind_gaussian_noise(
    images: torch.Tensor, max_sigma: float = 0.6, seed: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-mean noise with sigma drawn uniformly from [0, max_sigma] per image, clipped: (noisy, sigmas)."""
    generator = _generator(seed, images.device)
    sigmas = torch.rand(images.shape[0], generator=generator, device=images.device) * max_sigma
    noise_seed = None if generator is None else int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    return gaussian_noise(images, sigmas, clip=True, seed=noise_seed), sigmas


def downscale(images: torch.Tensor, factor: int, method: str = "area") -> torch.Tensor:
    """Shrink by an integer factor: 'area' (box filter, the MNIST SR protocol) or 'bicubic' (antialiased)."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    height, width = images.shape[-2] // factor, images.shape[-1] // factor
    if method == "area":
        return F.adaptive_avg_pool2d(images[..., : height * factor, : width * factor], (height, width))
    if method == "bicubic":
        small = F.interpolate(images, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
        return small.clamp(0.0, 1.0)
    raise ValueError(f"unknown downscaling method {method!r}; use 'area' or 'bicubic'")


def upscale(images: torch.Tensor, factor: int, method: str = "bicubic") -> torch.Tensor:
    """Enlarge by an integer factor with a classical filter ('nearest', 'bilinear' or 'bicubic'), in [0, 1]."""
    if method not in ("nearest", "bilinear", "bicubic"):
        raise ValueError(f"unknown upscaling method {method!r}")
    kwargs = {} if method == "nearest" else {"align_corners": False}
    return F.interpolate(images, scale_factor=factor, mode=method, **kwargs).clamp(0.0, 1.0)
