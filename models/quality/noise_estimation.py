"""Estimate the level of white Gaussian noise in a photograph, when the caller does not say it.

Two classical ideas, combined:

1. *The noise-only part of the patch spectrum* (Chen, Zhu and Heng, "An Efficient Statistical Method for
   Image Noise Level Estimation", ICCV 2015). Cut the image into overlapping 7x7 patches and take the
   eigenvalues of their covariance. Image structure lives in a few directions (the large eigenvalues);
   in the others only the noise is left, and white noise of variance sigma^2 gives each of them the
   eigenvalue sigma^2. Going from the largest eigenvalue down, the first tail whose mean is not above its
   median (a flat spectrum) is taken as noise, and its mean is sigma^2.
2. *Weak-textured patches* (Liu, Tanaka and Okutomi, "Single-Image Noise Level Estimation for Blind
   Denoising", IEEE TIP 2013). Texture also spreads into the small eigenvalues and inflates them, so the
   spectrum is computed again over the patches whose gradient energy is what noise of the current
   estimate would give (below its 99% quantile), and again until the estimate settles.

On BSD68 (481x321 grayscale) with noise of sigma 5..75 added as floats, the mean absolute error is 0.2 to
0.6 (0..255 scale; `python -m models.evaluate` measures it, docs/model-report.md). Eight-bit uploads clip
the noise at 0 and 255: patches holding a clipped pixel are left out where enough others remain, but at
high sigma the clipping also shrinks the noise everywhere near black and white, and the estimate reads
low (the report gives the figures). It needs no training and no SciPy: a covariance of at most
`max_patches` vectors and a few 49x49 eigen-decompositions, about 0.1 s for a megapixel plane.

Colour images are estimated channel by channel and the mean is returned: the colour model takes one
noise level for all three channels.
"""

from __future__ import annotations

import numpy as np

PATCH = 7  # patch side: 49-dimensional vectors
MAX_PATCHES = 60_000  # a stable covariance; bounds the time on large images
WEAK_TEXTURE_QUANTILE_Z = 2.326  # the standard normal's 99% quantile
MAX_REFINEMENTS = 10


def _box_sums(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Sums of `values` over every height x width window (top-left corners), by an integral image."""
    integral = np.pad(values.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return (
        integral[height:, width:]
        - integral[:-height, width:]
        - integral[height:, :-width]
        + integral[:-height, :-width]
    )


def _noise_variance(vectors: np.ndarray) -> float:
    """sigma^2 from the flat tail of the patch covariance's spectrum (Chen et al. 2015)."""
    centred = vectors - vectors.mean(axis=0)
    covariance = centred.T @ centred / max(1, len(centred) - 1)
    eigenvalues = np.clip(np.sort(np.linalg.eigvalsh(covariance))[::-1], 0.0, None)  # largest first
    for start in range(len(eigenvalues)):
        tail = eigenvalues[start:]
        if tail.mean() <= np.median(tail):
            return float(tail.mean())
    return float(eigenvalues[-1])


def _weak_texture_threshold(variance: float, patch: int) -> float:
    """The 99% quantile of a noise-only patch's gradient energy for noise of this variance.

    For white noise the energy (sum of squared horizontal and vertical differences in the patch) is close
    to a Gamma variable with mean 4 p (p - 1) sigma^2 and shape p^2 / 2 (Liu et al.), i.e. that mean / p^2
    times a chi-squared variable with p^2 degrees of freedom, whose quantile Wilson and Hilferty's cube
    approximation gives without SciPy.
    """
    degrees = patch * patch
    chi_squared = degrees * (1 - 2 / (9 * degrees) + WEAK_TEXTURE_QUANTILE_Z * np.sqrt(2 / (9 * degrees))) ** 3
    return variance * 4 * patch * (patch - 1) / degrees * chi_squared


def estimate_plane_sigma(plane: np.ndarray, patch: int = PATCH, max_patches: int = MAX_PATCHES) -> float:
    """The noise sigma of one (H, W) plane of 0..255 values (floats or integers), on the 0..255 scale."""
    image = np.asarray(plane, dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < patch:
        raise ValueError(f"need a 2-D plane of at least {patch}x{patch} pixels to estimate noise, got {image.shape}")
    windows = np.lib.stride_tricks.sliding_window_view(image, (patch, patch))
    rows, columns = windows.shape[:2]
    horizontal = np.diff(image, axis=1) ** 2
    vertical = np.diff(image, axis=0) ** 2
    texture = (
        _box_sums(horizontal, patch, patch - 1)[:rows, :columns]
        + _box_sums(vertical, patch - 1, patch)[:rows, :columns]
    )
    # Pixels at exactly 0 or 255 are where an 8-bit upload clipped the noise: their patches mislead.
    clipped = (
        _box_sums(
            (np.isclose(image, 0.0, atol=1e-3) | np.isclose(image, 255.0, atol=1e-3)).astype(np.float64), patch, patch
        )[:rows, :columns]
        > 0
    )

    step = max(1, int(np.ceil(np.sqrt(rows * columns / max_patches))))
    vectors = windows[::step, ::step].reshape(-1, patch * patch)
    energies = texture[::step, ::step].ravel()
    unclipped = ~clipped[::step, ::step].ravel()
    enough = 10 * patch * patch
    if unclipped.sum() >= enough:
        vectors, energies = vectors[unclipped], energies[unclipped]

    variance = _noise_variance(vectors)
    for _ in range(MAX_REFINEMENTS):
        weak = energies < _weak_texture_threshold(variance, patch)
        if weak.sum() < enough:
            break
        refined = _noise_variance(vectors[weak])
        settled = abs(refined - variance) <= 1e-4 * max(variance, 1e-6)
        variance = refined
        if settled:
            break
    return float(np.sqrt(variance))


def estimate_sigma(pixels: np.ndarray, patch: int = PATCH, max_patches: int = MAX_PATCHES) -> float:
    """The sigma (0..255 scale) of white Gaussian noise in a 0..255 image, (H, W) or (H, W, C)."""
    image = np.asarray(pixels, dtype=np.float64)
    planes = [image] if image.ndim == 2 else [image[..., channel] for channel in range(image.shape[2])]
    return float(np.mean([estimate_plane_sigma(plane, patch, max_patches) for plane in planes]))
