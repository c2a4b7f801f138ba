"""Tiled inference: run a fully convolutional network on an image of any size in bounded memory.

The image is cut into windows of at most `tile` x `tile` input pixels. Each window is the tile's *core*
plus a context *margin* on every side; the network sees the whole window, and only the core of its
output is kept ("keep-centre" stitching). The cores cover the image exactly once, so there is nothing
to average at the seams.

Why the result equals the untiled one: an output pixel of a fully convolutional network depends only on
the input pixels within its receptive radius r. If `margin >= r`, every kept core pixel sees, inside
its window, exactly what it would see in the whole image; where a window touches the image border the
network pads the same way in both cases. So with `margin >= r` the tiled output equals the untiled one
everywhere, up to float rounding (convolution algorithms may sum in another order: ~1e-6 in float32).
With a smaller margin the differences stay within r - margin pixels of the seams.

Every window has the same size (windows at the far edges are shifted back inside the image, so they
overlap their neighbours more), which lets windows of several images go through the network in
batches of `batch` windows. Peak memory is that of one batch of windows, whatever the image size.
Super-resolution works in low-resolution space: windows, cores and margins are in input pixels and
the kept output region is the core scaled by `scale`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

DEFAULT_TILE = 256  # input pixels per window side: ~0.07 megapixels per window
DEFAULT_BATCH = 4  # windows per forward pass


@dataclass(frozen=True)
class Window:
    """One window of one image: input rows/columns [top, top + height) x [left, left + width), and the core
    [core_top, core_bottom) x [core_left, core_right) in image coordinates, which lies inside the window."""

    image: int
    top: int
    left: int
    core_top: int
    core_bottom: int
    core_left: int
    core_right: int


def _spans(length: int, tile: int, margin: int) -> list[tuple[int, int, int]]:
    """Along one axis: (window start, core start, core end) covering [0, length) with windows of
    min(tile, length) pixels, each core at least `margin` pixels from its window's edges (or on the image edge)."""
    if length <= tile:
        return [(0, 0, length)]
    core = tile - 2 * margin
    spans = []
    start = 0
    while start < length:
        end = min(start + core, length)
        window_start = min(max(start - margin, 0), length - tile)
        spans.append((window_start, start, end))
        start = end
    return spans


def plan_windows(batch: int, height: int, width: int, tile: int, margin: int) -> list[Window]:
    """Every window of every image of a (batch, C, height, width) input."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if tile <= 2 * margin:
        raise ValueError(f"tile ({tile}) must be larger than twice the margin ({margin})")
    rows, columns = _spans(height, tile, margin), _spans(width, tile, margin)
    return [
        Window(image, top, left, core_top, core_bottom, core_left, core_right)
        for image in range(batch)
        for top, core_top, core_bottom in rows
        for left, core_left, core_right in columns
    ]


@torch.no_grad()
def tiled_apply(
    network: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    margin: int,
    scale: int = 1,
    tile: int = DEFAULT_TILE,
    batch: int = DEFAULT_BATCH,
) -> torch.Tensor:
    """network applied to (B, C, H, W) images window by window -> (B, C_out, H * scale, W * scale).

    `network` must be fully convolutional and map (n, C, h, w) to (n, C_out, h * scale, w * scale);
    `margin` is the context kept around each core (use the network's receptive radius for exact results).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    count, _, height, width = images.shape
    windows = plan_windows(count, height, width, tile, margin)
    window_height, window_width = min(tile, height), min(tile, width)
    output: torch.Tensor | None = None
    for start in range(0, len(windows), batch):
        group = windows[start : start + batch]
        inputs = torch.stack(
            [images[w.image, :, w.top : w.top + window_height, w.left : w.left + window_width] for w in group]
        )  # (n, C, window_height, window_width)
        results = network(inputs)  # (n, C_out, window_height * scale, window_width * scale)
        if output is None:
            output = results.new_empty((count, results.shape[1], height * scale, width * scale))
        for window, result in zip(group, results, strict=True):
            rows = slice((window.core_top - window.top) * scale, (window.core_bottom - window.top) * scale)
            columns = slice((window.core_left - window.left) * scale, (window.core_right - window.left) * scale)
            output[
                window.image,
                :,
                window.core_top * scale : window.core_bottom * scale,
                window.core_left * scale : window.core_right * scale,
            ] = result[:, rows, columns]
    assert output is not None  # at least one window: every image has at least one pixel
    return output
