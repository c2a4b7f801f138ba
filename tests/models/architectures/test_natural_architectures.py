"""DnCNN and FSRCNN: shapes for odd sizes, configs, colour rules, and tiled inference equal to untiled."""

from __future__ import annotations

import pytest
import torch

from models.architectures import FSRCNN, DnCNN, DnCNNConfig, FSRCNNConfig, build_model
from models.architectures.base import ArchitectureError
from models.data.natural_images import rgb_to_ycbcr
from models.runtime.tiling import plan_windows, tiled_apply


def images(batch: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights that are not tiny, and batch-norm statistics away from the identity, in eval mode."""
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("size", [(17, 23), (31, 9), (1, 1)])
def test_dncnn_keeps_any_size(size: tuple[int, int]) -> None:
    model = trained_like(DnCNN(DnCNNConfig(depth=4, width=6)))
    noisy = images(2, 1, *size)
    assert model(noisy).shape == noisy.shape
    assert model.denoise(images(2, 3, *size)).shape == (2, 3, *size)


def test_dncnn_predicts_the_noise() -> None:
    model = trained_like(DnCNN(DnCNNConfig(depth=3, width=4)))
    noisy = images(1, 1, 12, 10)
    assert torch.allclose(model(noisy), noisy - model.noise_estimator(noisy))


def test_dncnn_denoises_colour_channel_by_channel() -> None:
    model = trained_like(DnCNN(DnCNNConfig(depth=3, width=4)))
    rgb = images(1, 3, 15, 13)
    per_channel = torch.cat([model.denoise(rgb[:, c : c + 1]) for c in range(3)], dim=1)
    assert torch.allclose(model.denoise(rgb), per_channel, atol=1e-6)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("upsampler", ["pixel-shuffle", "deconv"])
def test_fsrcnn_upscales_odd_sizes(scale: int, upsampler: str) -> None:
    model = trained_like(FSRCNN(FSRCNNConfig(scale=scale, features=8, shrink=4, mapping_layers=2, upsampler=upsampler)))
    assert model(images(2, 1, 7, 11)).shape == (2, 1, 7 * scale, 11 * scale)
    assert model.super_resolve(images(2, 3, 9, 5)).shape == (2, 3, 9 * scale, 5 * scale)


def test_fsrcnn_colour_rule_is_luminance_by_network_chroma_bicubic() -> None:
    model = trained_like(FSRCNN(FSRCNNConfig(scale=2, features=8, shrink=4, mapping_layers=1)))
    rgb = images(1, 3, 10, 12) * 0.5 + 0.25  # mid-tones: nothing is clipped on the way back to RGB
    out = model.super_resolve(rgb)
    expected_y = model(rgb_to_ycbcr(rgb)[:, :1])
    assert torch.allclose(rgb_to_ycbcr(out)[:, :1], expected_y.clamp(0, 1), atol=1e-5)
    grey = rgb.mean(dim=1, keepdim=True)
    assert model.super_resolve(grey).shape == (1, 1, 20, 24)


def test_configs_refuse_bad_values_and_round_trip() -> None:
    with pytest.raises(ArchitectureError):
        build_model("fsrcnn", {"scale": 5})
    with pytest.raises(ArchitectureError):
        build_model("fsrcnn", {"upsampler": "nearest"})
    with pytest.raises(ArchitectureError):
        build_model("dncnn", {"noise_sigma": -1})
    model = build_model("dncnn", {"depth": 5, "width": 8, "noise_sigma": 25.0})
    assert build_model("dncnn", model.config_dict()).config == model.config


def test_windows_cover_every_pixel_once() -> None:
    windows = plan_windows(2, 70, 45, tile=32, margin=5)
    covered = torch.zeros(2, 70, 45, dtype=torch.int64)
    for w in windows:
        assert w.core_top >= w.top and w.core_bottom <= w.top + 32
        covered[w.image, w.core_top : w.core_bottom, w.core_left : w.core_right] += 1
    assert bool((covered == 1).all())


def test_tiles_need_room_for_their_margins() -> None:
    with pytest.raises(ValueError):
        plan_windows(1, 50, 50, tile=10, margin=5)


@pytest.mark.parametrize("size", [(70, 53), (40, 97)])
def test_tiled_denoiser_equals_untiled(size: tuple[int, int]) -> None:
    model = trained_like(DnCNN(DnCNNConfig(depth=5, width=8)))
    noisy = images(2, 1, *size)
    with torch.no_grad():
        whole = model(noisy)
    tiled = tiled_apply(model, noisy, margin=model.receptive_radius, tile=24, batch=3)
    # Keep-centre with a margin >= the receptive radius: equal everywhere up to float32 rounding.
    assert torch.allclose(tiled, whole, atol=1e-5)
    # The margin is what makes it exact: without one the seams differ.
    assert not torch.allclose(tiled_apply(model, noisy, margin=0, tile=24), whole, atol=1e-3)


@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("upsampler", ["pixel-shuffle", "deconv"])
def test_tiled_super_resolution_equals_untiled(scale: int, upsampler: str) -> None:
    model = trained_like(FSRCNN(FSRCNNConfig(scale=scale, features=8, shrink=4, mapping_layers=2, upsampler=upsampler)))
    low = images(1, 1, 45, 38)
    with torch.no_grad():
        whole = model(low)
    tiled = tiled_apply(model, low, margin=model.receptive_radius, scale=scale, tile=20, batch=2)
    assert tiled.shape == whole.shape
    assert torch.allclose(tiled, whole, atol=1e-5)
    assert not torch.allclose(tiled_apply(model, low, margin=0, scale=scale, tile=20), whole, atol=1e-3)


def test_serving_methods_tile_large_images_exactly() -> None:
    model = trained_like(DnCNN(DnCNNConfig(depth=4, width=6)))
    rgb = images(1, 3, 50, 61)
    assert torch.allclose(model.denoise(rgb, tile=20), model.denoise(rgb, tile=512), atol=1e-5)
