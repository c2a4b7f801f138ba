"""Image quality metrics, batched in torch: PSNR and SSIM per image.

Both take (B, C, H, W) float tensors with values in [0, data_range] and return one value per image,
shape (B,). Data-set figures are the mean of the per-image values (the usual convention for MNIST
denoising and super-resolution tables).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

# Wang, Bovik, Sheikh & Simoncelli (2004), "Image quality assessment: from error visibility to
# structural similarity": an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03.
SSIM_WINDOW_SIZE = 11
SSIM_WINDOW_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

# A perfect reconstruction has infinite PSNR; flooring the MSE keeps means finite (caps PSNR at 100 dB).
_MIN_MSE = 1e-10


def _check_pair(images: torch.Tensor, references: torch.Tensor) -> None:
    if images.shape != references.shape:
        raise ValueError(f"images {tuple(images.shape)} and references {tuple(references.shape)} differ in shape")
    if images.dim() != 4:
        raise ValueError(f"expected (B, C, H, W) tensors, got {tuple(images.shape)}")


def mse(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image: (B, C, H, W) x 2 -> (B,)."""
    _check_pair(images, references)
    return (images.double() - references.double()).pow(2).flatten(1).mean(dim=1)


def psnr(images: torch.Tensor, references: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB: 10 log10(data_range^2 / MSE), shape (B,)."""
    errors = mse(images, references).clamp_min(_MIN_MSE)
    return 10.0 * torch.log10(data_range**2 / errors)


def gaussian_profile(size: int = SSIM_WINDOW_SIZE, sigma: float = SSIM_WINDOW_SIGMA) -> torch.Tensor:
    """A normalised 1-D Gaussian, (size,), summing to 1 (float64)."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    profile = torch.exp(-(offsets**2) / (2 * sigma**2))
    return profile / profile.sum()


def gaussian_window(size: int = SSIM_WINDOW_SIZE, sigma: float = SSIM_WINDOW_SIGMA) -> torch.Tensor:
    """The normalised 2-D Gaussian window, (size, size), summing to 1: the outer product of two profiles."""
    profile = gaussian_profile(size, sigma)
    return torch.outer(profile, profile)


def ssim(
    images: torch.Tensor,
    references: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = SSIM_WINDOW_SIZE,
    sigma: float = SSIM_WINDOW_SIGMA,
) -> torch.Tensor:
    """Structural similarity per image (mean SSIM over the map and the channels), shape (B,).

    As in Wang et al.'s reference implementation the local statistics are Gaussian-weighted and the
    window only visits positions where it fits inside the image ('valid'), so a 28x28 digit gives an
    18x18 SSIM map; no border padding invents pixels. Symmetric in its two arguments.
    """
    _check_pair(images, references)
    batch, channels, height, width = images.shape
    if height < window_size or width < window_size:
        raise ValueError(f"SSIM needs images of at least {window_size}x{window_size}, got {height}x{width}")
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    # Channels are treated as separate grayscale images: (B*C, 1, H, W).
    x = images.double().reshape(batch * channels, 1, height, width)
    y = references.double().reshape(batch * channels, 1, height, width)
    profile = gaussian_profile(window_size, sigma).to(x.device)

    def local_mean(values: torch.Tensor) -> torch.Tensor:
        # The 2-D Gaussian is separable: filter the rows, then the columns (5x fewer operations).
        rows = F.conv2d(values, profile.view(1, 1, 1, window_size))  # (B*C, 1, H, W - size + 1)
        return F.conv2d(rows, profile.view(1, 1, window_size, 1))  # (B*C, 1, H - size + 1, W - size + 1)

    mean_x, mean_y = local_mean(x), local_mean(y)
    variance_x = local_mean(x * x) - mean_x**2
    variance_y = local_mean(y * y) - mean_y**2
    covariance = local_mean(x * y) - mean_x * mean_y
    luminance = (2 * mean_x * mean_y + c1) / (mean_x**2 + mean_y**2 + c1)
    structure = (2 * covariance + c2) / (variance_x + variance_y + c2)
    ssim_map = luminance * structure
    return ssim_map.view(batch, channels, -1).mean(dim=2).mean(dim=1)


def psnr_from_mse(mean_squared_error: float, data_range: float = 1.0) -> float:
    """PSNR of a single MSE value (e.g. a data-set mean) in dB."""
    return 10.0 * math.log10(data_range**2 / max(mean_squared_error, _MIN_MSE))
