"""A small residual super-resolution network in low-resolution space (the EDSR-baseline / CARN family,
cut to a serving budget of a 1-megapixel output within a second or two on one core).

A 3x3 convolution lifts the low-resolution luminance to `features` channels; `blocks` residual blocks
(3x3 convolution, ReLU, 3x3 convolution, added back: EDSR's block without batch norm) and one more 3x3
convolution refine them, with a skip over the whole body; a 3x3 convolution to scale^2 channels and a
pixel shuffle (ESPCN's sub-pixel convolution) make the high-resolution image, added to the bicubic
upscaling of the input, so the network learns only the detail bicubic misses. All but the last step run
at the low resolution: at x2, each low-resolution pixel costs about (2 * blocks + 3) * 9 * features^2
multiply-adds, 4x less per output pixel; at x4, 16x less.

Like FSRCNN (models.architectures.fsrcnn) it reads one channel, the luminance: a colour picture goes
through YCbCr, Y by the network, Cb and Cr bicubically. Tiled, so memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.architectures.base import Architecture
from models.architectures.luminance_sr import LuminanceSuperResolver


@dataclass(frozen=True)
class ResidualSRConfig:
    scale: int = 2  # 2, 3 or 4
    features: int = 32  # channels of every low-resolution layer
    blocks: int = 6  # residual blocks (two 3x3 convolutions each)

    def __post_init__(self) -> None:
        if self.scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {self.scale}")
        if self.features < 1 or self.blocks < 0:
            raise ValueError(f"features must be positive and blocks >= 0, got {self.features}, {self.blocks}")


class ResidualBlock(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(features, features, 3, padding=1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features + self.body(features)


class ResidualSR(Architecture, LuminanceSuperResolver):
    name = "residual-sr"
    reads_grayscale_and_colour = True  # a luminance network; colour by the documented rule
    config_class = ResidualSRConfig
    config: ResidualSRConfig

    def __init__(self, config: ResidualSRConfig) -> None:
        super().__init__(config)
        width, scale = config.features, config.scale
        self.head = nn.Conv2d(1, width, 3, padding=1)  # (B, 1, h, w) -> (B, width, h, w)
        blocks: list[nn.Module] = [ResidualBlock(width) for _ in range(config.blocks)]
        self.body = nn.Sequential(*blocks, nn.Conv2d(width, width, 3, padding=1))
        # (B, width, h, w) -> (B, scale^2, h, w) -> (B, 1, h * scale, w * scale)
        last = nn.Conv2d(width, scale * scale, 3, padding=1)
        # An untrained network is bicubic upscaling (the residual starts at zero), not bicubic plus noise.
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)
        self.upsample = nn.Sequential(last, nn.PixelShuffle(scale))

    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def receptive_radius(self) -> int:
        """Low-resolution pixels on each side one output pixel depends on: one per 3x3 convolution (head,
        two per block, the body's last, the upsampler's), and bicubic's 2 (covered by these but for no block)."""
        return max(2 * self.config.blocks + 3, 2)

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) luminance -> (B, 1, h * scale, w * scale), not clipped."""
        features = self.head(low)
        high = self.upsample(features + self.body(features))
        return high + F.interpolate(low, scale_factor=self.scale, mode="bicubic", align_corners=False)
