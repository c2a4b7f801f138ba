"""The lesson's convolutional autoencoder, with an optional dense bottleneck.

Encoder: three (conv 3x3 + ReLU, max-pool 2) stages take 28x28 down to 4x4.
Decoder: mirrors it with nearest-neighbour upsampling back to 28x28 and a sigmoid output.
The same network serves reconstruction, embeddings and (trained on noisy inputs) denoising.

Other sizes (`image_size`, both sides multiples of 4) follow the same plan: a side S is pooled to
S/2, S/4 and ceil(S/8); the decoder doubles ceil(S/8) twice, to S/2 + 2 when S is 4 more than a
multiple of 8 (28: 4 -> 8 -> 16), where the lesson's 'valid' convolution trims it to S/2 (14), or to
exactly S/2 when S is a multiple of 8, where a 'same' convolution keeps it; a last doubling gives S.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.architectures.base import Architecture, check_image_size, image_size_field
from models.architectures.protocols import Denoiser, Embedder, Reconstructor


@dataclass(frozen=True)
class ConvAutoencoderConfig:
    in_channels: int = 1  # 1 for MNIST digits
    widths: tuple[int, int, int] = (16, 8, 8)  # channels of the three encoder stages (the lesson's 16, 8, 8)
    latent_size: int | None = None  # dense bottleneck size; None keeps the 4x4 feature map as the code
    image_size: tuple[int, int] = image_size_field()  # (height, width), multiples of 4

    def __post_init__(self) -> None:
        if len(self.widths) != 3 or min(self.widths) < 1:
            raise ValueError(f"widths must be three positive ints, got {self.widths}")
        if self.latent_size is not None and self.latent_size < 1:
            raise ValueError(f"latent_size must be positive or None, got {self.latent_size}")
        check_image_size(self.image_size, 4)


def conv_relu(in_channels: int, out_channels: int, padding: int | tuple[int, int] = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=padding), nn.ReLU(inplace=True))


class ConvAutoencoder(Architecture, Reconstructor, Embedder, Denoiser):
    name = "conv-autoencoder"
    config_class = ConvAutoencoderConfig
    config: ConvAutoencoderConfig

    def __init__(self, config: ConvAutoencoderConfig) -> None:
        super().__init__(config)
        w1, w2, w3 = config.widths
        height, width = config.image_size
        self.feature_shape = (w3, math.ceil(height / 8), math.ceil(width / 8))  # (w3, 4, 4) for 28x28
        feature_size = math.prod(self.feature_shape)
        # Per axis: 'valid' (0) where the doubled map is 2 too large (28: 16 -> 14), else 'same' (1).
        trim_padding = (1 if height % 8 == 0 else 0, 1 if width % 8 == 0 else 0)
        self.encoder = nn.Sequential(
            conv_relu(config.in_channels, w1),
            nn.MaxPool2d(2),  # (B, w1, 14, 14)
            conv_relu(w1, w2),
            nn.MaxPool2d(2),  # (B, w2, 7, 7)
            conv_relu(w2, w3),
            nn.MaxPool2d(2, ceil_mode=True),  # (B, w3, 4, 4): 'same' pooling as in the lesson
        )
        self.to_latent: nn.Module = nn.Identity()
        self.from_latent: nn.Module = nn.Identity()
        if config.latent_size is not None:
            self.to_latent = nn.Sequential(nn.Flatten(), nn.Linear(feature_size, config.latent_size))
            self.from_latent = nn.Sequential(
                nn.Linear(config.latent_size, feature_size), nn.ReLU(inplace=True), nn.Unflatten(1, self.feature_shape)
            )
        self.decoder = nn.Sequential(
            conv_relu(w3, w3),
            nn.Upsample(scale_factor=2),  # (B, w3, 8, 8)
            conv_relu(w3, w2),
            nn.Upsample(scale_factor=2),  # (B, w2, 16, 16)
            conv_relu(w2, w1, padding=trim_padding),  # (B, w1, 14, 14): the lesson's 'valid' convolution
            nn.Upsample(scale_factor=2),  # (B, w1, 28, 28)
            nn.Conv2d(w1, config.in_channels, 3, padding=1),
            nn.Sigmoid(),
        )

    @property
    def embedding_size(self) -> int:
        if self.config.latent_size is not None:
            return self.config.latent_size
        c, h, w = self.feature_shape
        return c * h * w

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, 28, 28) -> the code: (B, latent_size), or (B, w3, 4, 4) without a dense bottleneck."""
        return self.to_latent(self.encoder(images))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """The code -> (B, C, 28, 28) images in [0, 1]."""
        return self.decoder(self.from_latent(codes))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, 28, 28) -> (B, embedding_size) vectors."""
        return self.encode(images).flatten(1)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))

    def denoise(self, images: torch.Tensor) -> torch.Tensor:
        """A denoising autoencoder's reconstruction is its denoised image."""
        return self.reconstruct(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(images)
