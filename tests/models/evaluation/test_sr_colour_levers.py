"""The colour lever of the luminance super-resolvers, on generated pictures and tiny networks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.architectures.residual_sr import ResidualSR, ResidualSRConfig
from models.checkpoint import InputSpec, ModelCard, save_checkpoint
from models.evaluation.sr_colour_levers import COLOUR_SET, colour_levers, main

NETWORK_ROWS = (
    "served: Y by the network, Cb and Cr bicubic",
    "Y, Cb and Cr by the network",
    "R, G and B by the network",
)


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    folder = tmp_path / COLOUR_SET
    folder.mkdir()
    generator = np.random.default_rng(0)
    for index in range(2):
        coarse = Image.fromarray(generator.integers(0, 256, (6, 6, 3), dtype=np.uint8))
        coarse.resize((36 + 4 * index, 28), Image.Resampling.BICUBIC).save(folder / f"{index}.png")
    return folder


def test_an_untrained_network_is_bicubic_on_every_plane_alike(pictures: Path) -> None:
    model = ResidualSR(ResidualSRConfig(scale=2, features=4, blocks=1)).eval()  # its last layer starts at zero
    scores = colour_levers(model, pictures)
    assert set(scores) == {"bicubic", *NETWORK_ROWS, "bicubic, on Y", "served, on Y"}
    # bicubic is linear and YCbCr affine: the three routes agree up to 8-bit rounding
    assert max(scores[row] for row in NETWORK_ROWS) - min(scores[row] for row in NETWORK_ROWS) < 0.05
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    perturbed = colour_levers(model, pictures)
    assert abs(perturbed[NETWORK_ROWS[0]] - perturbed[NETWORK_ROWS[1]]) > 0.01  # colour now goes another way


def test_command_line(pictures: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = ResidualSR(ResidualSRConfig(scale=2, features=4, blocks=1))
    card = ModelCard(
        name="tiny-sr",
        tasks=["super-resolve"],
        architecture="",
        architecture_config={},
        input=InputSpec(channels=3, height=None, width=None, domain="natural"),
        scale=2,
    )
    save_checkpoint(model, card, tmp_path / "tiny-sr")
    assert main(["--natural-dir", str(pictures.parent), "--model", str(tmp_path / "tiny-sr")]) == 0
    printed = capsys.readouterr().out
    assert "tiny-sr x2, bicubic:" in printed and "tiny-sr x2, served, on Y:" in printed
