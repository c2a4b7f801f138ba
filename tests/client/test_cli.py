"""`ae`, the command line: the client verbs against a real uvicorn server, the others delegate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from drawn_digits import digit_batch, png_bytes
from PIL import Image

from aeclient import Client
from aeclient.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
Capture = pytest.CaptureFixture[str]


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("digits")
    paths = []
    for index, digit in enumerate(digit_batch(3, seed=21)):
        path = folder / f"digit{index}.png"
        path.write_bytes(png_bytes(digit))
        paths.append(str(path))
    return paths


def test_help_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aeclient.cli", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    for command in ["serve", "train", "evaluate", "bench", "denoise", "super-resolve", "reconstruct", "embed",
                    "sample", "restyle", "encode", "decode", "interpolate", "manifold", "models",
                    "health"]:  # fmt: skip
        assert f"\n    {command}" in result.stdout, command


def test_train_delegates_to_models_train(capsys: Capture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    assert "--data-dir" in capsys.readouterr().out


# Run in a fresh interpreter in which torch cannot be imported, as on a machine with the client install only.
WITHOUT_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
from aeclient.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("verb", [["serve", "--port", "0"], ["train", "--list"]])
def test_server_verbs_without_torch_say_what_is_missing(verb: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, *verb], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2, result.stderr
    assert f"ae {verb[0]}: needs torch, which is not installed" in result.stderr
    assert "Traceback" not in result.stderr


def test_client_verbs_without_torch_still_work() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, "health", "--url", "http://127.0.0.1:9"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "cannot reach http://127.0.0.1:9" in result.stderr, result.stderr


def test_denoise_writes_what_the_client_returns(server: str, digit_files: list[str], tmp_path: Path) -> None:
    out = tmp_path / "clean.png"
    assert main(["denoise", digit_files[0], "-o", str(out), "--url", server]) == 0
    with Client(server) as client:
        expected = client.denoise(digit_files[0])[0]
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.asarray(expected))

    folder = tmp_path / "many"
    assert main(["denoise", *digit_files, "-o", f"{folder}/", "--url", server]) == 0
    assert sorted(path.name for path in folder.iterdir()) == ["digit0.png", "digit1.png", "digit2.png"]


def test_super_resolve_upscales(server: str, tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    small.write_bytes(png_bytes(digit_batch(1, seed=4, size=14)[0]))
    assert main(["super-resolve", str(small), "-o", str(tmp_path / "big.png"), "--url", server]) == 0
    assert Image.open(tmp_path / "big.png").size == (28, 28)


def test_reconstruct_prints_one_error_per_image(server: str, digit_files: list[str], capsys: Capture) -> None:
    assert main(["reconstruct", *digit_files, "--url", server]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == digit_files
    assert all(float(line.split("\t")[1]) >= 0 for line in lines)


def test_embed_formats_agree(server: str, digit_files: list[str], tmp_path: Path, capsys: Capture) -> None:
    assert main(["embed", *digit_files, "--format", "jsonl", "--url", server]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["file"] for row in rows] == digit_files
    assert main(["embed", *digit_files, "--format", "npy", "-o", str(tmp_path / "e.npy"), "--url", server]) == 0
    array = np.load(tmp_path / "e.npy")
    assert array.shape == (3, 16)
    np.testing.assert_allclose(array, np.array([row["embedding"] for row in rows]), rtol=1e-6)
    assert main(["embed", *digit_files, "--format", "json", "-o", str(tmp_path / "e.json"), "--url", server]) == 0
    assert json.loads((tmp_path / "e.json").read_text()) == rows


def test_vae_verbs(server: str, digit_files: list[str], tmp_path: Path, capsys: Capture) -> None:
    grid = tmp_path / "grid.png"
    assert main(["sample", "-n", "6", "--seed", "1", "-o", str(grid), "--url", server]) == 0
    assert Image.open(grid).size == (3 * 28, 2 * 28)  # 6 images: 3 columns, 2 rows
    again = tmp_path / "again.png"
    assert main(["sample", "-n", "6", "--seed", "1", "-o", str(again), "--url", server]) == 0
    assert again.read_bytes() == grid.read_bytes()

    row = tmp_path / "row.png"
    assert main(["interpolate", *digit_files[:2], "--steps", "4", "-o", str(row), "--url", server]) == 0
    assert Image.open(row).size == (4 * 28, 28)
    assert main(["manifold", "--size", "2", "-o", str(tmp_path / "m.png"), "--url", server]) == 0
    assert Image.open(tmp_path / "m.png").size == (56, 56)
    assert main(["decode", "[[0, 0], [1, 1]]", "-o", str(tmp_path / "d.png"), "--url", server]) == 0
    assert Image.open(tmp_path / "d.png").size == (56, 28)

    capsys.readouterr()
    assert main(["encode", digit_files[0], "--url", server]) == 0
    posterior = json.loads(capsys.readouterr().out)
    assert len(posterior["mean"]) == 2 and len(posterior["log_variance"]) == 2


def test_models_and_health(server: str, capsys: Capture) -> None:
    assert main(["models", "--url", server]) == 0
    table = capsys.readouterr().out
    assert "tiny-ae" in table and "tiny-vae-2d" in table
    assert main(["models", "tiny-ae", "--json", "--url", server]) == 0
    assert json.loads(capsys.readouterr().out)["latent_size"] == 16
    assert main(["health", "--url", server]) == 0
    assert capsys.readouterr().out.strip() == "ready"


def test_server_errors_exit_1_with_the_servers_message(
    server: str, digit_files: list[str], tmp_path: Path, capsys: Capture
) -> None:
    code = main(["denoise", digit_files[0], "-o", str(tmp_path / "x.png"), "--model", "nope", "--url", server])
    assert code == 1
    assert "model_not_found" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_unreachable_server_exits_2(capsys: Capture) -> None:
    assert main(["health", "--url", "http://127.0.0.1:9"]) == 2
    assert "cannot reach" in capsys.readouterr().err


def test_labels_and_restyle_verbs(server: str, digit_files: list[str], tmp_path: Path) -> None:
    digits = tmp_path / "digits.png"
    labels = ",".join(str(label) for label in range(10))
    assert main(["sample", "-n", "10", "--label", labels, "--seed", "2", "--columns", "10", "-o", str(digits),
                 "--url", server]) == 0  # fmt: skip
    assert Image.open(digits).size == (10 * 28, 28)
    sevens = tmp_path / "sevens.png"
    assert main(["sample", "-n", "2", "--label", "7", "--seed", "2", "-o", str(sevens), "--url", server]) == 0
    assert main(["decode", "[[0, 0, 0, 0]]", "--label", "3", "-o", str(tmp_path / "d.png"), "--url", server]) == 0
    row = tmp_path / "row.png"
    assert main(["restyle", digit_files[0], "--labels", "1,2,3", "--source-label", "4", "-o", str(row),
                 "--url", server]) == 0  # fmt: skip
    assert Image.open(row).size == (3 * 28, 28)
    assert main(["sample", "-n", "1", "--label", "12", "-o", str(tmp_path / "x.png"), "--url", server]) != 0
