"""The classical baselines: agree with SciPy, PCA on tiny data, BM3D and upscaling behave."""

from __future__ import annotations

import pytest
import torch
from scipy import ndimage

from models.quality.baselines import (
    PCA,
    best_gaussian_sigma,
    bicubic_upscale,
    bm3d_denoise,
    gaussian_blur,
    median_filter,
    nearest_upscale,
)
from models.quality.metrics import psnr


def random_images(count: int = 3, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_median_filter_matches_scipy() -> None:
    images = random_images()
    expected = ndimage.median_filter(images.numpy(), size=(1, 1, 3, 3), mode="mirror")
    assert torch.equal(median_filter(images, 3), torch.from_numpy(expected))


def test_median_filter_removes_an_isolated_speck() -> None:
    images = torch.zeros(1, 1, 8, 8)
    images[0, 0, 4, 4] = 1.0
    assert median_filter(images).abs().max().item() == 0.0


def test_gaussian_blur_matches_scipy_and_keeps_the_mean() -> None:
    images = random_images()
    expected = ndimage.gaussian_filter(images.numpy(), sigma=(0, 0, 1.2, 1.2), mode="mirror", truncate=3.0)
    blurred = gaussian_blur(images, 1.2)
    assert torch.allclose(blurred, torch.from_numpy(expected), atol=1e-6)
    constant = torch.full((1, 1, 9, 9), 0.3)
    assert torch.allclose(gaussian_blur(constant, 0.8), constant, atol=1e-6)


def test_the_blur_is_tuned_stronger_for_stronger_noise() -> None:
    rows, columns = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    smooth = (0.5 + 0.4 * torch.sin(rows / 5) * torch.cos(columns / 7)).expand(8, 1, 16, 16).contiguous()
    noise = torch.randn(smooth.shape, generator=torch.Generator().manual_seed(0))
    candidates = (0.5, 1.0, 2.0, 3.0)
    light = best_gaussian_sigma(smooth, smooth + 0.02 * noise, candidates)
    heavy = best_gaussian_sigma(smooth, smooth + 0.5 * noise, candidates)
    assert light in candidates and heavy in candidates
    assert heavy > light


def test_bm3d_improves_a_noisy_digit() -> None:
    rows, columns = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    ring = ((rows - 14) ** 2 + (columns - 14) ** 2).sqrt()
    clean = ((ring > 6) & (ring < 10)).float().view(1, 1, 28, 28)
    noisy = clean + 0.2 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    denoised = bm3d_denoise(noisy, 0.2)
    assert denoised.shape == clean.shape and denoised.dtype == clean.dtype
    assert denoised.min().item() >= 0.0 and denoised.max().item() <= 1.0
    assert psnr(denoised, clean).item() > psnr(noisy.clamp(0, 1), clean).item() + 3.0


def test_upscaling_baselines() -> None:
    small = random_images(2, 7)
    nearest = nearest_upscale(small, 4)
    assert nearest.shape == (2, 1, 28, 28)
    assert torch.equal(nearest[..., ::4, ::4], small)  # each pixel becomes a 4x4 block
    bicubic = bicubic_upscale(small, 2)
    assert bicubic.shape == (2, 1, 14, 14)
    assert bicubic.min().item() >= 0.0 and bicubic.max().item() <= 1.0


def plane_data(count: int = 50) -> torch.Tensor:
    """4-pixel 'images' on a 2-D plane: mean + a * u + b * v, variance along u larger than along v."""
    generator = torch.Generator().manual_seed(0)
    u = torch.tensor([1.0, 1.0, 0.0, 0.0]) / 2**0.5
    v = torch.tensor([0.0, 0.0, 1.0, -1.0]) / 2**0.5
    a = 0.2 * torch.randn(count, 1, generator=generator)
    b = 0.05 * torch.randn(count, 1, generator=generator)
    a, b = a - a.mean(), b - b.mean()
    b = b - (a * b).sum() / (a * a).sum() * a  # uncorrelated with a, so u and v are exactly the axes
    pixels = 0.5 + a * u + b * v  # (count, 4), well inside [0, 1]
    return pixels.view(count, 1, 2, 2)


def test_pca_recovers_a_plane() -> None:
    images = plane_data()
    two = PCA.fit(images, 2)
    assert torch.allclose(two.components @ two.components.T, torch.eye(2), atol=1e-5)
    assert torch.allclose(two.reconstruct(images), images, atol=1e-5)  # the data lie in a 2-D plane
    assert two.embed(images).shape == (50, 2)
    one = PCA.fit(images, 1)
    first = one.components[0]
    assert abs(first @ torch.tensor([1.0, 1.0, 0.0, 0.0]) / 2**0.5) == pytest.approx(1.0, abs=1e-5)
    # Dropping the second component loses exactly the variance along it.
    error = (one.reconstruct(images) - images).pow(2).sum(dim=(1, 2, 3)).mean()
    along_v = (images.view(50, 4) @ torch.tensor([0.0, 0.0, 1.0, -1.0]) / 2**0.5).var(unbiased=False)
    assert error.item() == pytest.approx(along_v.item(), rel=1e-4)


def test_pca_refuses_impossible_sizes() -> None:
    with pytest.raises(ValueError, match="dimensions"):
        PCA.fit(plane_data(), 5)
    with pytest.raises(ValueError, match="two images"):
        PCA.fit(plane_data(1), 1)


def test_bm3d_gives_the_same_result_in_worker_processes() -> None:
    noisy = random_images(8, 16, seed=4)
    parallel, serial = bm3d_denoise(noisy, 0.3, workers=2), bm3d_denoise(noisy, 0.3, workers=1)
    # Equal up to float rounding: the bm3d package's own numerics vary in the last bit from run to run.
    assert torch.allclose(parallel, serial, atol=1e-6), (parallel - serial).abs().max()
