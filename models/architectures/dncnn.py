"""DnCNN (Zhang et al., 2017): a residual denoiser for natural images of any size.

A plain stack of 3x3 convolutions (the first with ReLU, the middle ones with batch norm and ReLU, the
last linear) predicts the *noise*; the clean estimate is the input minus that prediction. There is no
pooling, so any height and width go through, and each output pixel depends only on input pixels
within `depth` pixels of it (the receptive radius, which tiled inference uses as its margin).

The network is grayscale. `denoise` is what the service calls: it takes grayscale or RGB images and
applies the documented colour rule, *per channel* (R, G and B are each denoised as a grayscale image:
white Gaussian noise added to each channel independently is exactly the grayscale model's case), with
tiled inference so that memory stays bounded on large images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.architectures.base import Architecture
from models.architectures.protocols import Denoiser
from models.runtime.tiling import DEFAULT_BATCH, DEFAULT_TILE, tiled_apply


@dataclass(frozen=True)
class DnCNNConfig:
    depth: int = 17  # convolution layers in all (DnCNN-S: 17, DnCNN-B: 20)
    width: int = 64  # channels of the hidden layers
    batch_norm: bool = True  # batch norm in the middle layers (eval mode: a fixed per-channel affine map)
    # The AWGN sigma (0..255 scale) the weights were trained for, for the card and the service's listing;
    # None means *blind*: one network trained on sigmas drawn from a range (DnCNN-B), no sigma input.
    noise_sigma: float | None = None

    def __post_init__(self) -> None:
        if self.depth < 2 or self.width < 1:
            raise ValueError(f"depth must be >= 2 and width >= 1, got depth {self.depth}, width {self.width}")
        if self.noise_sigma is not None and self.noise_sigma <= 0:
            raise ValueError(f"noise_sigma must be positive or None (blind), got {self.noise_sigma}")


class DnCNN(Architecture, Denoiser):
    name = "dncnn"
    reads_grayscale_and_colour = True  # a grayscale network; colour by the documented rule
    config_class = DnCNNConfig
    config: DnCNNConfig

    def __init__(self, config: DnCNNConfig) -> None:
        super().__init__(config)
        width = config.width
        layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(config.depth - 2):
            layers.append(nn.Conv2d(width, width, 3, padding=1, bias=not config.batch_norm))
            if config.batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.noise_estimator = nn.Sequential(*layers)  # (B, 1, H, W) -> (B, 1, H, W)

    @property
    def receptive_radius(self) -> int:
        """Input pixels on each side that one output pixel depends on: one per 3x3 convolution."""
        return self.config.depth

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) noisy -> (B, 1, H, W) clean estimate, not clipped (the training target's scale)."""
        return noisy - self.noise_estimator(noisy)

    def denoise(self, images: torch.Tensor, tile: int = DEFAULT_TILE, batch: int = DEFAULT_BATCH) -> torch.Tensor:
        """(B, 1 or 3, H, W) in [0, 1] -> the same shape in [0, 1]; colour images channel by channel, tiled."""
        count, channels, height, width = images.shape
        planes = images.reshape(count * channels, 1, height, width)  # every channel a grayscale image
        clean = tiled_apply(self, planes, margin=self.receptive_radius, tile=tile, batch=batch)
        return clean.reshape(count, channels, height, width).clamp(0.0, 1.0)
