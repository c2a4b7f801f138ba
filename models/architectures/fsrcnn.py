"""FSRCNN-family super-resolution (Dong et al., 2016; ESPCN's sub-pixel upsampling, Shi et al., 2016).

Everything runs at the low resolution: a 5x5 feature extraction, a 1x1 shrink, `mapping_layers` 3x3
convolutions, a 1x1 expansion, then the upsampler at the very end, either
- "pixel-shuffle": a 3x3 convolution to scale^2 channels rearranged into a scale-times larger image
  (ESPCN's sub-pixel convolution), or
- "deconv": FSRCNN's 9x9 transposed convolution with stride `scale`.
With `residual` the network adds its output to the bicubic upscaling of its input (torch's bicubic),
so it only learns the detail bicubic misses, which trains much faster. Any height and width go through;
an output pixel depends on input pixels within `receptive_radius` low-resolution pixels.

The network reads one channel: the luminance. `super_resolve` is what the service calls: a grayscale
image goes through as it is; an RGB image is converted to YCbCr (BT.601), Y is upscaled by the network,
Cb and Cr bicubically (the literature's rule), and the result is converted back to RGB. Tiled, so memory
stays bounded on large images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.architectures.base import Architecture
from models.architectures.luminance_sr import LuminanceSuperResolver

UPSAMPLERS = ("pixel-shuffle", "deconv")


@dataclass(frozen=True)
class FSRCNNConfig:
    scale: int = 2  # 2, 3 or 4
    features: int = 56  # d: channels after feature extraction and expansion
    shrink: int = 12  # s: channels of the mapping layers
    mapping_layers: int = 4  # m
    upsampler: str = "pixel-shuffle"  # one of UPSAMPLERS
    residual: bool = True  # add the bicubic upscaling of the input to the output

    def __post_init__(self) -> None:
        if self.scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {self.scale}")
        if self.upsampler not in UPSAMPLERS:
            raise ValueError(f"upsampler must be one of {UPSAMPLERS}, got {self.upsampler!r}")
        if min(self.features, self.shrink) < 1 or self.mapping_layers < 0:
            raise ValueError("features and shrink must be positive, mapping_layers >= 0")


class FSRCNN(Architecture, LuminanceSuperResolver):
    name = "fsrcnn"
    reads_grayscale_and_colour = True  # a grayscale network; colour by the documented rule
    config_class = FSRCNNConfig
    config: FSRCNNConfig

    def __init__(self, config: FSRCNNConfig) -> None:
        super().__init__(config)
        d, s, scale = config.features, config.shrink, config.scale
        layers: list[nn.Module] = [nn.Conv2d(1, d, 5, padding=2), nn.PReLU(d), nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(config.mapping_layers):
            layers += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        layers += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*layers)  # (B, 1, h, w) -> (B, d, h, w)
        if config.upsampler == "pixel-shuffle":
            # (B, d, h, w) -> (B, scale^2, h, w) -> (B, 1, h * scale, w * scale)
            self.upsample: nn.Module = nn.Sequential(nn.Conv2d(d, scale * scale, 3, padding=1), nn.PixelShuffle(scale))
        else:
            # output side (h - 1) * scale - 8 + 9 + (scale - 1) = h * scale
            self.upsample = nn.ConvTranspose2d(d, 1, 9, stride=scale, padding=4, output_padding=scale - 1)

    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def receptive_radius(self) -> int:
        """Low-resolution pixels on each side one output pixel depends on (rounded up, with bicubic's 2)."""
        body = 2 + self.config.mapping_layers
        upsampler = 1 if self.config.upsampler == "pixel-shuffle" else math.ceil(4 / self.config.scale) + 1
        return max(body + upsampler, 2)

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) luminance -> (B, 1, h * scale, w * scale), not clipped."""
        high = self.upsample(self.body(low))
        if self.config.residual:
            high = high + F.interpolate(low, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return high
