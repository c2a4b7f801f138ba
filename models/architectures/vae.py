"""A convolutional variational autoencoder for 28x28 digits.

encode: image -> (mean, log_variance) of a diagonal Gaussian q(z|x)
decode: z -> Bernoulli pixel probabilities p(x|z)
The prior is N(0, I). The KL term uses the *log-variance* consistently (see `kl_divergence`).
Other sizes (`image_size`, both sides multiples of 4): the two stride-2 convolutions give S/2 and S/4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.architectures.base import Architecture, check_image_size, image_size_field
from models.architectures.protocols import Embedder, Reconstructor, VariationalCoder


@dataclass(frozen=True)
class ConvVAEConfig:
    latent_size: int = 16  # dimensions of z; 2 gives a latent space that can be drawn
    in_channels: int = 1  # 1 for MNIST digits
    widths: tuple[int, int] = (32, 64)  # channels after the two stride-2 convolutions (14x14, 7x7)
    hidden_size: int = 256  # dense layer between the feature map and (mean, log_variance)
    image_size: tuple[int, int] = image_size_field()  # (height, width), multiples of 4

    def __post_init__(self) -> None:
        if self.latent_size < 1 or self.hidden_size < 1 or len(self.widths) != 2 or min(self.widths) < 1:
            raise ValueError(f"invalid ConvVAE config: {self}")
        check_image_size(self.image_size, 4)


def kl_divergence(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_variance)) || N(0, I)) per example, in nats: (B, D) -> (B,).

    0.5 * sum(mean^2 + var - log var - 1). With log-sigma instead of log-variance the last two terms
    would need factors of 2; mixing the two conventions is the classic mistake this avoids.
    """
    return 0.5 * (mean.pow(2) + log_variance.exp() - log_variance - 1.0).sum(dim=1)


class ConvVAE(Architecture, VariationalCoder, Reconstructor, Embedder):
    name = "conv-vae"
    config_class = ConvVAEConfig
    config: ConvVAEConfig

    def __init__(self, config: ConvVAEConfig) -> None:
        super().__init__(config)
        w1, w2 = config.widths
        feature_shape = (w2, config.image_size[0] // 4, config.image_size[1] // 4)  # (w2, 7, 7) for 28x28
        feature_size = math.prod(feature_shape)
        self.encoder = nn.Sequential(
            nn.Conv2d(config.in_channels, w1, 4, stride=2, padding=1),  # (B, w1, 14, 14)
            nn.ReLU(inplace=True),
            nn.Conv2d(w1, w2, 4, stride=2, padding=1),  # (B, w2, 7, 7)
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(feature_size, config.hidden_size),
            nn.ReLU(inplace=True),
        )
        self.to_mean = nn.Linear(config.hidden_size, config.latent_size)
        self.to_log_variance = nn.Linear(config.hidden_size, config.latent_size)
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_size, config.hidden_size),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden_size, feature_size),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, feature_shape),
            nn.ConvTranspose2d(w2, w1, 4, stride=2, padding=1),  # (B, w1, 14, 14)
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(w1, config.in_channels, 4, stride=2, padding=1),  # (B, C, 28, 28) logits
        )

    @property
    def latent_size(self) -> int:
        return self.config.latent_size

    @property
    def embedding_size(self) -> int:
        return self.config.latent_size

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, 28, 28) -> mean (B, D), log_variance (B, D)."""
        hidden = self.encoder(images)
        return self.to_mean(hidden), self.to_log_variance(hidden)

    def decode_logits(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, C, 28, 28) Bernoulli logits."""
        return self.decoder(latents)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, C, 28, 28) pixel probabilities in [0, 1] (the mean image)."""
        return torch.sigmoid(self.decode_logits(latents))

    @staticmethod
    def reparameterise(
        mean: torch.Tensor, log_variance: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + (0.5 * log_variance).exp() * noise

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The posterior mean is the embedding: (B, C, 28, 28) -> (B, D)."""
        return self.encode(images)[0]

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean (deterministic)."""
        return self.decode(self.embed(images))

    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """n images from the prior, z ~ N(0, temperature^2 I): (n, C, 28, 28)."""
        param = next(self.parameters())
        latents = torch.randn((n, self.latent_size), generator=generator, device=param.device, dtype=param.dtype)
        return self.decode(latents * temperature)

    def loss(
        self, images: torch.Tensor, targets: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Negative ELBO per example, in nats, with its two terms: (B,), (B,), (B,).

        `targets` are the (binarised) pixels the likelihood is scored on; by default the inputs.
        """
        targets = images if targets is None else targets
        mean, log_variance = self.encode(images)
        latents = self.reparameterise(mean, log_variance, generator)
        logits = self.decode_logits(latents)
        reconstruction = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).sum(dim=1)
        kl = kl_divergence(mean, log_variance)
        return reconstruction + kl, reconstruction, kl

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(images)
