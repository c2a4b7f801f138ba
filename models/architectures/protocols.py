"""The task methods an architecture can implement, one typed protocol each.

An architecture declares what it can do by naming these protocols among its bases, e.g.
`class ConvAutoencoder(Architecture, Reconstructor, Embedder, Denoiser)`; the type checker then holds its
methods to these signatures. The task table (`models.runtime.tasks`) names, for every task, the protocol a model
must implement and calls the method through it; a model that lacks it is refused before anything runs.

Images are float tensors (batch, channels, height, width) in [0, 1]; latents are (batch, latent_size).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Reconstructor(Protocol):
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> their reconstructions, of the same shape."""
        ...


@runtime_checkable
class Embedder(Protocol):
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> (batch, embedding size) vectors."""
        ...


@runtime_checkable
class Denoiser(Protocol):
    def denoise(self, images: torch.Tensor) -> torch.Tensor:
        """Noisy images -> clean estimates, of the same shape."""
        ...


@runtime_checkable
class NoiseLevelDenoiser(Protocol):
    """A denoiser told the noise level (FFDNet): one network for a range of levels, given or estimated."""

    def estimate_noise(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> (batch,) the sigma of their white Gaussian noise, on the 0..255 scale."""
        ...

    def denoise_at(self, images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Noisy images and (batch,) noise levels (0..255 scale) -> clean estimates, of the same shape."""
        ...


@runtime_checkable
class SuperResolver(Protocol):
    @property
    def scale(self) -> int:
        """The upscaling factor."""
        ...

    def super_resolve(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H * scale, W * scale)."""
        ...


@runtime_checkable
class VariationalCoder(Protocol):
    @property
    def latent_size(self) -> int:
        """Dimensions of the latent space."""
        ...

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> the posterior's means and log-variances, (batch, latent_size) each."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(batch, latent_size) latents -> images."""
        ...
