"""FFDNet (Zhang, Zuo, Zhang, IEEE TIP 2018): one fast denoiser for every noise level, grayscale or colour.

The noisy image is split into four half-resolution sub-images (pixel-unshuffle by 2), a *noise-level
map* (sigma / 255 per sub-image pixel and channel) is stacked onto them, and a plain stack of 3x3
convolutions (batch norm and ReLU in the middle) works at half resolution, which costs about a quarter
of what a full-resolution network of the same width and depth costs. Pixel-shuffle puts the four
sub-images back together. Here the network predicts the *noise* of the sub-images (residual learning,
as in DnCNN), which trains faster than predicting the clean image; the published FFDNet predicts the
clean sub-images directly. Set `residual=False` for that form.

Because the noise level is an input, one network serves sigma 0..75, and a map that varies over the
image handles noise that varies over the image. Each output pixel depends on input pixels within
`receptive_radius` of it, which tiled inference uses as its margin; windows are aligned to the 2x2
sub-sampling so that tiles see exactly the sub-images the whole image would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.architectures.base import Architecture
from models.architectures.protocols import Denoiser, NoiseLevelDenoiser
from models.quality.noise_estimation import estimate_sigma
from models.runtime.tiling import DEFAULT_BATCH, tiled_apply

# Windows of 512x512 input pixels: the network works at half resolution, so a window holds what a
# 256x256 window of a full-resolution network does, and the margins (receptive radius 31) waste less.
DEFAULT_TILE = 512
SIGMA_RANGE = (0.0, 75.0)  # the noise levels (0..255 scale) the published models are trained for


@dataclass(frozen=True)
class FFDNetConfig:
    channels: int = 1  # image channels: 1 grayscale, 3 RGB
    depth: int = 15  # convolution layers in all (published: 15 grayscale, 12 colour)
    width: int = 64  # channels of the hidden layers (published: 64 grayscale, 96 colour)
    batch_norm: bool = True  # batch norm in the middle layers (eval mode: a fixed per-channel affine map)
    residual: bool = True  # predict the noise (True) or the clean sub-images (False, the paper's form)
    max_sigma: float = SIGMA_RANGE[1]  # the highest noise level trained for (0..255 scale)

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.depth < 2 or self.width < 1:
            raise ValueError(f"depth must be >= 2 and width >= 1, got depth {self.depth}, width {self.width}")
        if self.max_sigma <= 0:
            raise ValueError(f"max_sigma must be positive, got {self.max_sigma}")


class FFDNet(Architecture, Denoiser, NoiseLevelDenoiser):
    name = "ffdnet"
    # A grayscale network denoises colour pictures channel by channel; a colour one reads a grayscale
    # picture as three equal channels and gives back their mean: grayscale stays grayscale either way.
    reads_grayscale_and_colour = True
    config_class = FFDNetConfig
    config: FFDNetConfig

    def __init__(self, config: FFDNetConfig) -> None:
        super().__init__(config)
        sub_images = 4 * config.channels  # the 2x2 sub-sampling of every channel
        width = config.width
        layers: list[nn.Module] = [
            nn.Conv2d(sub_images + config.channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
        ]
        for _ in range(config.depth - 2):
            layers.append(nn.Conv2d(width, width, 3, padding=1, bias=not config.batch_norm))
            if config.batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(width, sub_images, 3, padding=1))
        # (B, 5C, H/2, W/2) sub-images + noise map -> (B, 4C, H/2, W/2) noise (or clean) sub-images
        self.body = nn.Sequential(*layers)

    @property
    def receptive_radius(self) -> int:
        """Input pixels on each side that one output pixel depends on: each half-resolution 3x3 convolution
        reaches two full-resolution pixels, plus one for the 2x2 grouping."""
        return 2 * self.config.depth + 1

    def noise_map(self, sigma: torch.Tensor | float, batch: int, height: int, width: int) -> torch.Tensor:
        """sigma (0..255 scale) as a scalar, a (B,) vector, or a (B, 1 or C, H, W) map -> (B, C, H/2, W/2) / 255."""
        reference = next(self.parameters())
        levels = torch.as_tensor(sigma, dtype=reference.dtype, device=reference.device) / 255.0
        channels = self.config.channels
        if levels.dim() <= 1:
            levels = levels.reshape(-1, 1, 1, 1).expand(batch, channels, height // 2, width // 2)
        else:
            # A full-resolution map: the level of each 2x2 block is the mean of its four pixels.
            levels = F.avg_pool2d(levels, 2).expand(batch, channels, height // 2, width // 2)
        return levels

    def forward(self, noisy: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """(B, C, H, W) noisy, H and W even; sigma as in `noise_map` -> (B, C, H, W) clean estimate, not clipped."""
        batch, _, height, width = noisy.shape
        sub_images = F.pixel_unshuffle(noisy, 2)  # (B, 4C, H/2, W/2)
        levels = self.noise_map(sigma, batch, height, width).to(sub_images.dtype)
        predicted = self.body(torch.cat([sub_images, levels], dim=1))  # (B, 4C, H/2, W/2)
        if self.config.residual:
            predicted = sub_images - predicted
        return F.pixel_shuffle(predicted, 2)

    def estimate_noise(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B,) the sigma (0..255 scale) of the white Gaussian noise in each image,
        by the classical estimator of `models.quality.noise_estimation` (no network involved)."""
        levels = (images.detach().float().cpu() * 255.0).permute(0, 2, 3, 1).numpy()  # (B, H, W, C) in 0..255
        return torch.tensor([estimate_sigma(image) for image in levels], dtype=torch.float32)

    def denoise(self, images: torch.Tensor) -> torch.Tensor:
        """Blind: each image at the noise level `estimate_noise` reads from it."""
        return self.denoise_at(images, self.estimate_noise(images))

    def denoise_at(
        self, images: torch.Tensor, sigma: torch.Tensor | float, tile: int = DEFAULT_TILE, batch: int = DEFAULT_BATCH
    ) -> torch.Tensor:
        """(B, C, H, W) in [0, 1], any H and W; sigma a scalar or a (B,) vector (0..255) -> the same shape in [0, 1].

        Odd sides are padded by reflection to even ones (and cropped back); large images go through in
        tiles whose windows start on even pixels, so each window splits into the same sub-images the
        whole image does.
        """
        count, channels, height, width = images.shape
        levels = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1).expand(count)
        if channels != self.config.channels:
            return self._denoise_other_mode(images, levels, tile, batch)
        padded = F.pad(images, (0, width % 2, 0, height % 2), mode="replicate")
        outputs = []
        # One image at a time: each has its own noise level, and windows of one image share it.
        for index in range(count):
            level = levels[index]

            def network(windows: torch.Tensor, level: torch.Tensor = level) -> torch.Tensor:
                return self(windows, level)

            # Even tile, margin and (padded) sides put every window on an even pixel.
            margin = _even(self.receptive_radius)
            outputs.append(
                tiled_apply(network, padded[index : index + 1], margin=margin, tile=_even(tile), batch=batch)
            )
        return torch.cat(outputs)[:, :, :height, :width].clamp(0.0, 1.0)

    def _denoise_other_mode(self, images: torch.Tensor, levels: torch.Tensor, tile: int, batch: int) -> torch.Tensor:
        """Colour pictures through a grayscale network (each channel a grayscale picture), or grayscale
        pictures through a colour network (three equal channels in, their mean out)."""
        count, channels, height, width = images.shape
        if self.config.channels == 1:
            planes = images.reshape(count * channels, 1, height, width)
            clean = self.denoise_at(planes, levels.repeat_interleave(channels), tile, batch)
            return clean.reshape(count, channels, height, width)
        if channels != 1:
            raise ValueError(f"expected 1 or {self.config.channels} channels, got {channels}")
        colour = self.denoise_at(images.expand(count, self.config.channels, height, width), levels, tile, batch)
        return colour.mean(dim=1, keepdim=True)


def _even(value: int) -> int:
    return value + value % 2
