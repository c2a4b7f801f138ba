"""Draw the example images used by the curl examples in docs/api.md (no data set needed).

    python docs/examples/make_examples.py

writes, next to this file:
- digit.png      a 28x28 white-on-black "7", like an MNIST digit
- noisy.png      the same digit with Gaussian noise (sigma 0.4), for /v1/denoise
- digit-14.png   the digit area-downscaled to 14x14, for /v1/super-resolve with mnist-sr-x2
- digit-7.png    the digit area-downscaled to 7x7, for mnist-sr-x4
- three.png      a 28x28 "3", a second end for /v1/vae/interpolate
- photo.jpg      a 200x160 photo-like picture of a dark "4" on light paper (framed by the service)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

HERE = Path(__file__).resolve().parent


def draw_digit(digit: int, size: int = 28) -> Image.Image:
    canvas = Image.new("L", (size, size), 0)
    font = ImageFont.load_default(size=round(size * 0.8))
    ImageDraw.Draw(canvas).text((size / 2, size / 2), str(digit), fill=255, font=font, anchor="mm", stroke_width=1)
    return canvas


def main() -> None:
    rng = np.random.default_rng(0)
    seven = draw_digit(7)
    seven.save(HERE / "digit.png")
    draw_digit(3).save(HERE / "three.png")
    pixels = np.asarray(seven, dtype=np.float32) / 255
    noisy = np.clip(pixels + rng.normal(0, 0.4, pixels.shape), 0, 1)
    Image.fromarray((noisy * 255).round().astype(np.uint8)).save(HERE / "noisy.png")
    for side in (14, 7):  # area downscaling, the protocol the super-resolution models were trained on
        factor = 28 // side
        small = pixels.reshape(side, factor, side, factor).mean(axis=(1, 3))
        Image.fromarray((small * 255).round().astype(np.uint8)).save(HERE / f"digit-{side}.png")
    paper = Image.new("L", (200, 160), 228)
    font = ImageFont.load_default(size=90)
    ImageDraw.Draw(paper).text((90, 85), "4", fill=35, font=font, anchor="mm", stroke_width=3, stroke_fill=35)
    photo = np.asarray(paper.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    photo += np.linspace(-15, 10, 200)[None, :] + rng.normal(0, 6, photo.shape)  # uneven light, paper grain
    Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).convert("RGB").save(HERE / "photo.jpg", quality=85)


if __name__ == "__main__":
    main()
