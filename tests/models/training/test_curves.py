"""The learning-curve command draws every state folder's run: denoisers (three noise levels) and super-resolvers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from models.training.curves import curve_table, doubling_fit, main, passes_for_gain

DENOISER_POINTS = [
    {"patch_passes": 0, "minutes": 0.0, "sigma_15": 29.0, "sigma_25": 27.0, "sigma_50": 24.0, "mean": 26.67},
    {"patch_passes": 1000, "minutes": 5.0, "sigma_15": 29.5, "sigma_25": 27.5, "sigma_50": 24.5, "mean": 27.17},
]
SR_POINTS = [
    {"patch_passes": 0, "minutes": 0.0, "model": 33.9, "bicubic": 33.66},
    {"patch_passes": 2500, "minutes": 5.0, "model": 35.1, "bicubic": 33.66},
]


def test_every_run_gets_its_figure_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, points in (("photo-denoise-gray", DENOISER_POINTS), ("photo-sr-x2", SR_POINTS)):
        (tmp_path / "state" / name).mkdir(parents=True)
        (tmp_path / "state" / name / "run.json").write_text(json.dumps({"validation": points}))
    assert main(["--state-dir", str(tmp_path / "state"), "--out", str(tmp_path)]) == 0
    for name in ("photo-denoise-gray", "photo-sr-x2"):
        with Image.open(tmp_path / f"{name}-learning-curve.png") as figure:
            assert figure.format == "PNG" and figure.width > 100
    printed = capsys.readouterr().out
    assert "| patch passes | minutes | sigma 15 | sigma 25 | sigma 50 | mean |" in printed
    assert "| patch passes | minutes | model | bicubic |" in printed and "| 2,500 | 5.0 | 35.10 | 33.66 |" in printed


def test_a_denoiser_table_has_the_mean_beside_the_noise_levels() -> None:
    assert curve_table(DENOISER_POINTS)[-2] == "| 1,000 | 5.0 | 29.50 | 27.50 | 24.50 | 27.17 |"


def test_the_fit_per_doubling_and_where_it_reaches_a_gain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 0.4 dB per doubling exactly, 100,000 to 1,600,000 patch passes; the first point lies before the later half
    points = [{"patch_passes": 1000, "minutes": 0.0, "sigma_15": 0.0, "sigma_25": 0.0, "sigma_50": 0.0, "mean": 0.0}]
    for step in range(1, 17):
        level = 28.0 + 0.4 * math.log2(step)
        figures = {"sigma_15": level, "sigma_25": level, "sigma_50": 30.0 - 0.1 * step, "mean": level}
        points.append({"patch_passes": 100_000 * step, "minutes": 1.0, **figures})
    fit = doubling_fit(points, "sigma_25")
    assert fit is not None and fit[0] == pytest.approx(0.4)
    assert passes_for_gain(points, "sigma_25", 0.8) == pytest.approx(6_400_000, rel=1e-6)  # two doublings more
    assert passes_for_gain(points, "sigma_50", 0.1) is None  # falling: never
    assert doubling_fit(points[:3], "sigma_25") is None  # too few points in the later half

    (tmp_path / "state" / "photo-denoise-gray").mkdir(parents=True)
    (tmp_path / "state" / "photo-denoise-gray" / "run.json").write_text(json.dumps({"validation": points}))
    argv = [
        "--state-dir",
        str(tmp_path / "state"),
        "--out",
        str(tmp_path),
        "--needs",
        "photo-denoise-gray:sigma_25:0.4",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "sigma 25 +0.400 dB" in printed and "+0.4 dB of sigma 25 beyond the latest point: ~3,200,000" in printed
    with pytest.raises(SystemExit):
        main(["--state-dir", str(tmp_path / "state"), "--needs", "photo-denoise-gray:0.4"])
