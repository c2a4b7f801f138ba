"""Statistics of each corruption: noise mean and spread, clipping, seeding, area = box mean."""

from __future__ import annotations

import pytest
import torch

from models.data.corruptions import blind_gaussian_noise, downscale, gaussian_noise, upscale


def grey(batch: int = 64, size: int = 28, value: float = 0.5) -> torch.Tensor:
    return torch.full((batch, 1, size, size), value)


def test_gaussian_noise_has_the_asked_mean_and_sigma_without_clipping() -> None:
    images = grey()
    noise = gaussian_noise(images, 0.1, clip=False, seed=0) - images
    assert abs(float(noise.mean())) < 0.002
    assert abs(float(noise.std()) - 0.1) < 0.002


def test_lesson_variant_shifts_the_mean() -> None:
    images = grey(value=0.2)
    noise = gaussian_noise(images, 0.05, mean=0.5, clip=False, seed=0) - images
    assert abs(float(noise.mean()) - 0.5) < 0.002


def test_clipping_keeps_pixels_in_range() -> None:
    noisy = gaussian_noise(grey(), 2.0, clip=True, seed=0)
    assert noisy.min() == 0.0 and noisy.max() == 1.0
    unclipped = gaussian_noise(grey(), 2.0, clip=False, seed=0)
    assert unclipped.min() < 0.0 and unclipped.max() > 1.0


def test_per_image_sigma_tensor() -> None:
    sigmas = torch.tensor([0.0, 0.2])
    noisy = gaussian_noise(grey(batch=2), sigmas, clip=False, seed=0)
    assert torch.equal(noisy[0], grey(batch=1)[0])
    assert abs(float((noisy[1] - 0.5).std()) - 0.2) < 0.03


def test_seeds_are_reproducible_and_distinct() -> None:
    images = grey(batch=4)
    assert torch.equal(gaussian_noise(images, 0.3, seed=5), gaussian_noise(images, 0.3, seed=5))
    assert not torch.equal(gaussian_noise(images, 0.3, seed=5), gaussian_noise(images, 0.3, seed=6))
    first, sigmas = blind_gaussian_noise(images, seed=9)
    again, sigmas_again = blind_gaussian_noise(images, seed=9)
    assert torch.equal(first, again) and torch.equal(sigmas, sigmas_again)


def test_blind_noise_draws_sigma_per_image_in_range() -> None:
    images = grey(batch=2000, size=8)
    noisy, sigmas = blind_gaussian_noise(images, max_sigma=0.6, seed=1)
    assert sigmas.shape == (2000,)
    assert sigmas.min() >= 0 and sigmas.max() <= 0.6
    assert abs(float(sigmas.mean()) - 0.3) < 0.02  # uniform on [0, 0.6]
    assert noisy.min() >= 0 and noisy.max() <= 1
    # On mid-grey images clipping is rare for small sigma, so the measured spread tracks the drawn sigma.
    small = (sigmas > 0.02) & (sigmas < 0.1)
    ratios = (noisy[small] - 0.5).flatten(1).std(dim=1) / sigmas[small]
    assert abs(float(ratios.mean()) - 1.0) < 0.02
    # Large sigmas are visibly shrunk by the clipping to [0, 1].
    large = sigmas > 0.5
    assert float(((noisy[large] - 0.5).flatten(1).std(dim=1) / sigmas[large]).mean()) < 0.9


def test_area_downscale_is_the_mean_of_each_box() -> None:
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for factor in (2, 4):
        small = downscale(images, factor, "area")
        size = 28 // factor
        boxes = images.reshape(2, 1, size, factor, size, factor).mean(dim=(3, 5))
        assert small.shape == (2, 1, size, size)
        assert torch.allclose(small, boxes, atol=1e-6)


def test_bicubic_downscale_and_upscale_stay_in_range() -> None:
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    small = downscale(images, 4, "bicubic")
    assert small.shape == (2, 1, 7, 7) and small.min() >= 0 and small.max() <= 1
    for method in ("nearest", "bilinear", "bicubic"):
        big = upscale(small, 4, method)
        assert big.shape == (2, 1, 28, 28) and big.min() >= 0 and big.max() <= 1
    assert torch.equal(upscale(small, 2, "nearest")[..., ::2, ::2], small)


def test_unknown_methods_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown downscaling"):
        downscale(grey(), 2, "lanczos")
    with pytest.raises(ValueError, match="unknown upscaling"):
        upscale(grey(), 2, "lanczos")
