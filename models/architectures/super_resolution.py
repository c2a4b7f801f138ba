"""A small super-resolution autoencoder for MNIST digits (x2: 14x14 -> 28x28, x4: 7x7 -> 28x28).

The encoder reads the low-resolution digit with a few convolutions at its own size; the decoder
doubles the resolution once per factor of two (nearest upsampling + convolution), so the network
learns the missing detail instead of interpolating it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.architectures.base import Architecture
from models.architectures.conv_autoencoder import conv_relu
from models.architectures.protocols import SuperResolver


@dataclass(frozen=True)
class SuperResolutionAEConfig:
    scale: int = 2  # upscaling factor: 2 or 4 (a power of two)
    in_channels: int = 1  # 1 for MNIST digits
    width: int = 32  # channels of every hidden layer
    encoder_layers: int = 3  # convolutions at the low resolution

    def __post_init__(self) -> None:
        if self.scale < 2 or self.scale & (self.scale - 1):
            raise ValueError(f"scale must be a power of two >= 2, got {self.scale}")
        if self.width < 1 or self.encoder_layers < 1:
            raise ValueError("width and encoder_layers must be positive")


class SuperResolutionAE(Architecture, SuperResolver):
    name = "sr-autoencoder"
    config_class = SuperResolutionAEConfig
    config: SuperResolutionAEConfig

    def __init__(self, config: SuperResolutionAEConfig) -> None:
        super().__init__(config)
        width = config.width
        layers = [conv_relu(config.in_channels, width)]
        layers += [conv_relu(width, width) for _ in range(config.encoder_layers - 1)]
        self.encoder = nn.Sequential(*layers)  # (B, width, h, w)
        stages: list[nn.Module] = []
        for _ in range(int(math.log2(config.scale))):
            stages += [nn.Upsample(scale_factor=2), conv_relu(width, width)]  # doubles h and w
        self.decoder = nn.Sequential(*stages, nn.Conv2d(width, config.in_channels, 3, padding=1), nn.Sigmoid())

    @property
    def scale(self) -> int:
        return self.config.scale

    def super_resolve(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, h * scale, w * scale) in [0, 1]."""
        return self.decoder(self.encoder(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.super_resolve(images)
