"""The literature's protocols: YCbCr, modcrop, bicubic, PSNR on Y with border crop, the AWGN draw."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.data.natural_images import (
    awgn,
    bicubic_downscale,
    bicubic_upscale,
    load_images,
    luminance,
    modcrop,
    noise_generator,
    psnr_255,
    psnr_y,
    quantise,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)


def rgb(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).view(1, 3, 1, 1)


@pytest.mark.parametrize(
    ("colour", "expected"),
    [
        ((0.0, 0.0, 0.0), (16.0, 128.0, 128.0)),
        ((1.0, 1.0, 1.0), (235.0, 128.0, 128.0)),
        ((1.0, 0.0, 0.0), (81.481, 90.203, 240.0)),  # MATLAB: rgb2ycbcr(uint8([255 0 0])) = [81 90 240]
        ((0.0, 0.0, 1.0), (40.966, 240.0, 109.786)),
    ],
)
def test_ycbcr_matches_bt601_studio_swing(colour: tuple[float, ...], expected: tuple[float, ...]) -> None:
    levels = rgb_to_ycbcr(rgb(*colour)).flatten() * 255.0
    assert levels.tolist() == pytest.approx(expected, abs=1e-6)


def test_ycbcr_round_trips() -> None:
    image = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(image)), image, atol=1e-10)


def test_grayscale_image_is_its_own_luminance() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    assert torch.equal(luminance(grey), torch.from_numpy(grey).float()[None, None] / 255.0)


def test_modcrop_trims_bottom_and_right() -> None:
    pixels = np.zeros((13, 10, 3), dtype=np.uint8)
    assert modcrop(pixels, 3).shape == (12, 9, 3)
    assert modcrop(pixels, 2).shape == (12, 10, 3)


def test_psnr_of_a_known_pair() -> None:
    reference = torch.full((1, 1, 8, 8), 100 / 255)
    off_by_one_level = reference + 1 / 255
    assert psnr_255(off_by_one_level, reference) == pytest.approx(20 * math.log10(255), abs=1e-6)  # 48.13 dB
    off_by_ten = reference + 10 / 255
    assert psnr_255(off_by_ten, reference) == pytest.approx(20 * math.log10(25.5), abs=1e-6)


def test_border_crop_ignores_exactly_scale_pixels() -> None:
    reference = torch.full((1, 1, 12, 12), 0.5)
    damaged = reference.clone()
    damaged[..., :3, :] = 0.0  # the top three rows are wrong
    assert psnr_y(damaged, reference, scale=3) == math.inf  # cropped away
    assert psnr_y(damaged, reference, scale=2) < 30  # row 2 is still inside


def test_psnr_y_quantises_to_uint8_levels() -> None:
    reference = torch.full((1, 1, 6, 6), 100 / 255)
    assert psnr_y(reference + 0.4 / 255, reference, scale=1) == math.inf  # rounds back to the same level


def test_bicubic_keeps_constants_and_sizes() -> None:
    flat = torch.full((1, 1, 12, 18), 0.3)
    small = bicubic_downscale(flat, 3)
    assert small.shape == (1, 1, 4, 6)
    assert torch.allclose(small, flat[..., :4, :6], atol=1e-6)
    assert bicubic_upscale(small, 3).shape == (1, 1, 12, 18)
    with pytest.raises(ValueError):
        bicubic_downscale(torch.zeros(1, 1, 10, 10), 3)


def test_awgn_protocol_statistics() -> None:
    clean = torch.full((1, 1, 200, 200), 0.02)
    noisy = awgn(clean, 25.0, noise_generator(0))
    noise = (noisy - clean) * 255.0
    assert abs(noise.mean().item()) < 0.5  # 40,000 draws: the mean's standard error is 0.125
    assert noise.std().item() == pytest.approx(25.0, rel=0.02)
    assert noisy.min().item() < 0.0  # not clipped
    assert torch.equal(noisy, awgn(clean, 25.0, noise_generator(0)))  # seed 0 gives the same draw
    assert not torch.equal(noisy, awgn(clean, 25.0, noise_generator(1)))


def test_quantise_rounds_and_clips() -> None:
    values = torch.tensor([-0.2, 0.5 / 255, 1.6 / 255, 1.3]).view(1, 1, 1, 4)
    assert (quantise(values) * 255).flatten().tolist() == pytest.approx([0.0, 0.0, 2.0, 255.0])


def test_load_images_keeps_grayscale_and_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.full((5, 6), 7, dtype=np.uint8)).save(tmp_path / "b.png")
    Image.fromarray(np.full((4, 3, 3), 9, dtype=np.uint8)).save(tmp_path / "a.bmp")
    (tmp_path / "notes.txt").write_text("not an image")
    loaded = load_images(tmp_path)
    assert [image.name for image in loaded] == ["a.bmp", "b.png"]
    assert loaded[0].pixels.shape == (4, 3, 3)
    assert loaded[1].pixels.shape == (5, 6)
