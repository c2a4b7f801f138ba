"""PSNR and SSIM: hand-computed values, the properties SSIM must have and an independent reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.signal import correlate2d

from models.quality.metrics import gaussian_window, mse, psnr, psnr_from_mse, ssim


def test_psnr_of_a_known_pair() -> None:
    clean = torch.zeros(1, 1, 4, 4)
    shifted = torch.full((1, 1, 4, 4), 0.125)  # MSE 1/64 -> 10 log10(64) = 18.0618 dB (exact in binary)
    assert psnr(shifted, clean).item() == pytest.approx(18.061799739838872, abs=1e-9)
    half = clean.clone()
    half[..., :2, :] = 0.5  # 8 of 16 pixels off by 0.5: MSE 0.125 -> 10 log10(8) = 9.0309 dB
    assert psnr(half, clean).item() == pytest.approx(10 * math.log10(8), abs=1e-9)
    assert psnr(half, clean, data_range=255.0).item() == pytest.approx(10 * math.log10(255.0**2 * 8), abs=1e-9)


def test_psnr_is_per_image_and_finite_for_identical_images() -> None:
    clean = torch.zeros(3, 1, 4, 4)
    outputs = clean.clone()
    outputs[1] += 0.25
    outputs[2] += 0.5
    values = psnr(outputs, clean)
    assert values.shape == (3,)
    assert values[1].item() == pytest.approx(10 * math.log10(16))
    assert values[2].item() == pytest.approx(10 * math.log10(4))
    assert math.isfinite(values[0].item()) and values[0].item() >= 99.0
    assert mse(outputs, clean)[2].item() == pytest.approx(0.25)
    assert psnr_from_mse(0.01) == pytest.approx(20.0)


def test_metrics_refuse_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        psnr(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))


def digits(count: int = 4, seed: int = 0) -> torch.Tensor:
    """Smooth blobs on black, like MNIST digits: (count, 1, 28, 28) in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    rows, columns = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    centres = 8 + 12 * torch.rand(count, 2, generator=generator)
    blobs = torch.exp(-((rows - centres[:, 0, None, None]) ** 2 + (columns - centres[:, 1, None, None]) ** 2) / 18)
    return blobs.unsqueeze(1).clamp(0, 1)


def test_ssim_of_identical_images_is_one() -> None:
    images = digits()
    assert torch.allclose(ssim(images, images), torch.ones(4, dtype=torch.float64), atol=1e-12)


def test_ssim_decreases_with_noise_and_is_symmetric() -> None:
    clean = digits(8)
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(clean.shape, generator=generator)
    scores = [ssim((clean + sigma * noise).clamp(0, 1), clean).mean().item() for sigma in (0.02, 0.05, 0.1, 0.2, 0.4)]
    assert all(earlier > later for earlier, later in itertools.pairwise(scores)), scores
    assert scores[0] < 1.0 and scores[-1] > -1.0
    noisy = (clean + 0.2 * noise).clamp(0, 1)
    assert torch.allclose(ssim(noisy, clean), ssim(clean, noisy), atol=1e-12)


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al.'s formula written out with scipy's 2-D correlation ('valid', full 11x11 window)."""
    window = gaussian_window().numpy()
    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2

    def filtered(values: np.ndarray) -> np.ndarray:
        return correlate2d(values, window, mode="valid")

    mean_x, mean_y = filtered(x), filtered(y)
    sigma_x = filtered(x * x) - mean_x**2
    sigma_y = filtered(y * y) - mean_y**2
    sigma_xy = filtered(x * y) - mean_x * mean_y
    ssim_map = ((2 * mean_x * mean_y + c1) * (2 * sigma_xy + c2)) / (
        (mean_x**2 + mean_y**2 + c1) * (sigma_x + sigma_y + c2)
    )
    return float(ssim_map.mean())


def test_ssim_matches_an_independent_reference() -> None:
    generator = torch.Generator().manual_seed(2)
    clean = digits(3, seed=3)
    distorted = (clean * 0.8 + 0.1 + 0.1 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
    ours = ssim(distorted, clean)
    for index in range(3):
        expected = reference_ssim(distorted[index, 0].double().numpy(), clean[index, 0].double().numpy())
        assert ours[index].item() == pytest.approx(expected, abs=1e-10)


def test_gaussian_window_is_normalised_and_peaks_in_the_middle() -> None:
    window = gaussian_window()
    assert window.shape == (11, 11)
    assert window.sum().item() == pytest.approx(1.0)
    assert window.argmax().item() == 5 * 11 + 5
    # sigma 1.5: the centre-to-neighbour ratio is exp(1 / (2 * 1.5^2)).
    assert (window[5, 5] / window[5, 6]).item() == pytest.approx(math.exp(1 / 4.5))


def test_ssim_averages_channels() -> None:
    clean = digits(2)
    noisy = (clean + 0.1).clamp(0, 1)
    two_channels = ssim(torch.cat([clean, noisy], dim=1), torch.cat([clean, clean], dim=1))
    expected = (1.0 + ssim(noisy, clean)) / 2
    assert torch.allclose(two_channels, expected, atol=1e-12)
