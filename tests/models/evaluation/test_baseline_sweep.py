"""The whole-set (C)BM3D sweep on generated pictures and a tiny untrained FFDNet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.architectures import FFDNet, FFDNetConfig
from models.checkpoint import InputSpec, ModelCard, save_checkpoint
from models.evaluation.photo.baseline_sweep import main, summary, sweep


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sets") / "CBSD68"
    folder.mkdir()
    generator = np.random.default_rng(0)
    for index in range(3):
        coarse = Image.fromarray(generator.integers(0, 256, (5, 5, 3), dtype=np.uint8))
        coarse.resize((40, 32), Image.Resampling.BICUBIC).save(folder / f"{index}.png")
    return folder


@pytest.fixture(scope="module")
def denoiser(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    card = ModelCard(
        name="tiny-ffdnet",
        tasks=["denoise"],
        architecture="",
        architecture_config={},
        input=InputSpec(channels=3, height=None, width=None, domain="natural"),
    )
    directory = tmp_path_factory.mktemp("checkpoints") / "tiny-ffdnet"
    save_checkpoint(FFDNet(FFDNetConfig(channels=3, depth=3, width=8)), card, directory)
    return directory


def test_shards_together_are_the_whole_sweep_with_the_same_noise(pictures: Path, denoiser: Path) -> None:
    whole = sweep(denoiser, pictures, 25.0, "literature")
    halves = sweep(denoiser, pictures, 25.0, "literature", 0, 2) + sweep(denoiser, pictures, 25.0, "literature", 1, 2)
    assert [row["index"] for row in whole] == [0, 1, 2]
    assert sorted(halves, key=lambda row: row["index"]) == whole
    # the upload protocol is the same draw, clipped and rounded: a different, but close, noisy input
    upload = sweep(denoiser, pictures, 25.0, "upload")
    assert upload != whole and abs(upload[0]["noisy input"] - whole[0]["noisy input"]) < 1.0
    # BM3D removes much of sigma-25 noise from a smooth picture; the untrained network does not
    assert all(row["BM3D"] > row["noisy input"] + 3 for row in whole)


def test_summary_counts_wins_and_the_first_three() -> None:
    rows = [
        {"index": 2, "noisy input": 20.0, "model": 30.0, "BM3D": 31.0},
        {"index": 0, "noisy input": 20.0, "model": 32.0, "BM3D": 31.0},
        {"index": 1, "noisy input": 20.0, "model": 30.5, "BM3D": 31.0},
        {"index": 3, "noisy input": 20.0, "model": 33.0, "BM3D": 31.0},
    ]
    result = summary(rows)
    assert result["images"] == 4 and result["images where the model wins"] == 2
    assert result["model minus BM3D"] == pytest.approx(0.375)
    assert result["first 3 images, model minus BM3D"] == pytest.approx((1.0 - 0.5 - 1.0) / 3, abs=1e-3)


def test_command_line_writes_shards_and_combines_them(
    pictures: Path, denoiser: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--natural-dir", str(pictures.parent), "--model", str(denoiser), "--set", "CBSD68"]
    for shard in (0, 1):
        main([*common, "--shard", f"{shard}/2", "--out", str(tmp_path / f"{shard}.json")])
    capsys.readouterr()
    main(["--combine", str(tmp_path / "0.json"), str(tmp_path / "1.json")])
    combined = json.loads(capsys.readouterr().out)
    assert combined["images"] == 3
    with pytest.raises(SystemExit):
        main(["--set", "CBSD68"])  # neither a model nor shards to combine
    with pytest.raises(SystemExit):
        main([*common, "--shard", "2/2"])  # no such shard
