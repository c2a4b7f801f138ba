"""What the luminance super-resolution networks (FSRCNN, ResidualSR) share: the network reads one channel, the
luminance, tile by tile; a colour picture goes through YCbCr (BT.601), Y by the network, Cb and Cr
bicubically (the literature's rule), and back to RGB."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from models.architectures.protocols import SuperResolver
from models.data.natural_images import rgb_to_ycbcr, ycbcr_to_rgb
from models.runtime.tiling import DEFAULT_BATCH, DEFAULT_TILE, tiled_apply


class LuminanceSuperResolver(nn.Module, SuperResolver):
    """A network `forward`: (B, 1, h, w) luminance -> (B, 1, h * scale, w * scale), whose output pixels depend
    on input pixels within `receptive_radius`; subclasses state both."""

    @property
    def scale(self) -> int:
        raise NotImplementedError

    @property
    def receptive_radius(self) -> int:
        raise NotImplementedError

    def upscale_luminance(
        self, low: torch.Tensor, tile: int = DEFAULT_TILE, batch: int = DEFAULT_BATCH
    ) -> torch.Tensor:
        """(B, 1, h, w) -> (B, 1, h * scale, w * scale) by tiles, not clipped."""
        return tiled_apply(self, low, margin=self.receptive_radius, scale=self.scale, tile=tile, batch=batch)

    def super_resolve(self, images: torch.Tensor, tile: int = DEFAULT_TILE, batch: int = DEFAULT_BATCH) -> torch.Tensor:
        """(B, 1 or 3, h, w) in [0, 1] -> (B, same, h * scale, w * scale) in [0, 1]; colour: Y by the network,
        Cb and Cr by bicubic upscaling, back to RGB."""
        if images.shape[1] == 1:
            return self.upscale_luminance(images, tile, batch).clamp(0.0, 1.0)
        ycbcr = rgb_to_ycbcr(images)  # (B, 3, h, w)
        luma = self.upscale_luminance(ycbcr[:, :1], tile, batch)  # (B, 1, H, W)
        chroma = F.interpolate(ycbcr[:, 1:], scale_factor=self.scale, mode="bicubic", align_corners=False)
        return ycbcr_to_rgb(torch.cat([luma, chroma], dim=1)).clamp(0.0, 1.0)
