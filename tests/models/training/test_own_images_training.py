"""Training on a folder of one's own images: other image sizes for the networks, and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from models.architectures import ArchitectureError, ConvAutoencoder, ConvVAE, build_model
from models.architectures.conv_autoencoder import ConvAutoencoderConfig
from models.checkpoint import load_checkpoint
from models.data.image_folder import hold_out, load_image_folder
from models.train import main
from models.training.own_images import DOMAIN, LICENCE, MIN_EPOCHS, MIN_STEPS, default_epochs, held_out_checks

Capture = pytest.CaptureFixture[str]


@pytest.mark.parametrize("size", [(28, 28), (32, 32), (48, 36), (20, 60), (4, 8)])
def test_the_autoencoder_maps_other_sizes_onto_themselves(size: tuple[int, int]) -> None:
    for latent in (None, 5):
        model = ConvAutoencoder(
            ConvAutoencoderConfig(in_channels=3, widths=(4, 4, 4), latent_size=latent, image_size=size)
        )
        images = torch.rand(2, 3, *size)
        assert model(images).shape == images.shape
        assert model.embed(images).shape == (2, model.embedding_size)


@pytest.mark.parametrize("size", [(28, 28), (32, 32), (64, 48)])
def test_the_vae_maps_other_sizes_onto_themselves(size: tuple[int, int]) -> None:
    model = build_model("conv-vae", {"latent_size": 3, "in_channels": 3, "widths": [4, 4], "image_size": list(size)})
    assert isinstance(model, ConvVAE)
    images = torch.rand(2, 3, *size)
    assert model(images).shape == images.shape
    assert model.sample(4, torch.Generator().manual_seed(0)).shape == (4, 3, *size)
    neg_elbo, _, _ = model.loss(images)
    assert neg_elbo.shape == (2,) and bool(torch.isfinite(neg_elbo).all())


@pytest.mark.parametrize("architecture", ["conv-autoencoder", "conv-vae"])
@pytest.mark.parametrize("size", [[30, 32], [28, 26], [0, 28], [28]])
def test_sizes_the_networks_cannot_map_back_are_refused(architecture: str, size: list[int]) -> None:
    with pytest.raises(ArchitectureError, match="multiples of 4"):
        build_model(architecture, {"image_size": size})


def trim_convolution(model: ConvAutoencoder) -> nn.Conv2d:
    """The decoder's third convolution: 'valid' where the doubled map is 2 pixels too large."""
    convolution = model.decoder[4][0]  # type: ignore[index]
    assert isinstance(convolution, nn.Conv2d)
    return convolution


def test_the_28x28_layout_is_the_lessons_and_stays_out_of_the_card() -> None:
    """The shipped cards have no image_size: the default must rebuild exactly the network they were trained as."""
    default = ConvAutoencoder(ConvAutoencoderConfig())
    explicit = build_model("conv-autoencoder", {"image_size": [28, 28]})
    assert "image_size" not in default.config_dict() and "image_size" not in explicit.config_dict()
    assert default.feature_shape == (8, 4, 4)
    assert trim_convolution(default).padding == (0, 0)  # the lesson's 'valid' convolution, 16 -> 14
    assert trim_convolution(ConvAutoencoder(ConvAutoencoderConfig(image_size=(32, 32)))).padding == (1, 1)
    assert build_model("conv-autoencoder", {"image_size": [32, 28]}).config_dict()["image_size"] == [32, 28]
    assert "image_size" not in build_model("conv-vae", {}).config_dict()


def write_folder(root: Path, count: int = 12, size: tuple[int, int] = (16, 16)) -> Path:
    """Smooth colour images and a few grey ones, in two folders and formats, and one corrupt file."""
    (root / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0 : size[0], 0 : size[1]] / max(size)
    for index in range(count):
        phase = rng.random(3)
        pixels = np.stack([np.sin(6 * (xs + ys) + 6 * p) for p in phase], axis=-1) * 0.5 + 0.5  # (H, W, 3)
        image = Image.fromarray((pixels * 255).astype(np.uint8))
        if index % 4 == 0:
            image.convert("L").save(root / "nested" / f"grey{index}.jpg", quality=95)
        else:
            image.save(root / f"colour{index}.png")
    (root / "nested" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("own") / "holiday-photos")


def train_args(images_dir: Path, out: Path, task: str, name: str, *extra: str) -> list[str]:
    return ["--images-dir", str(images_dir), "--task", task, "--name", name, "--out", str(out),
            "--epochs", "2", "--threads", "1", *extra]  # fmt: skip


EXPECTED_FIGURES = {
    "reconstruct": {"reconstruct_psnr_db"},
    "denoise": {
        "denoise_psnr_db_sigma_0.25",
        "noisy_psnr_db_sigma_0.25",
        "denoise_psnr_db_sigma_0.5",
        "noisy_psnr_db_sigma_0.5",
        "reconstruct_psnr_db",
    },
    "super-resolve": {"super_resolve_psnr_db_x2", "bicubic_psnr_db_x2"},
    "vae": {"vae_negative_elbo_nats", "vae_reconstruction_nats", "vae_kl_nats", "reconstruct_psnr_db"},
}


@pytest.mark.parametrize("task", list(EXPECTED_FIGURES))
def test_each_task_trains_into_a_checkpoint_with_its_held_out_figures(
    images_dir: Path, tmp_path: Path, task: str, capsys: Capture
) -> None:
    name = f"my-{task}"
    assert main(train_args(images_dir, tmp_path, task, name)) == 0
    assert "skipped" in capsys.readouterr().err  # the corrupt file is reported

    checkpoint = load_checkpoint(tmp_path / name)  # the sha256 of the weights is checked here
    card = checkpoint.card
    side = 8 if task == "super-resolve" else 16  # super-resolution x2 takes the images at half size
    assert (card.input.channels, card.input.height, card.input.width, card.input.domain) == (3, side, side, DOMAIN)
    assert card.training["licence"] == LICENCE
    dataset = card.training["dataset"]
    assert dataset["images_dir"] == "holiday-photos" and dataset["images"] == 12
    assert dataset["skipped_files"] == 1 and dataset["skipped"][0].startswith("nested/corrupt.png: ")
    assert card.training["train_images"] + card.metrics["held_out"]["images"] == 12
    assert card.metrics["held_out"]["images"] == 1  # 10% of 12, rounded
    scores = card.metrics["held_out"]["scores"]
    assert set(scores) == EXPECTED_FIGURES[task] and scores == card.training["validation"]
    assert all(np.isfinite(value) for value in scores.values())
    assert (tmp_path / name / "samples.png").is_file() and (tmp_path / name / "loss.png").is_file()

    # The figures in the card are what the written weights give on the held-out images.
    folder = load_image_folder(images_dir)
    _, held = hold_out(len(folder.images), 0.1, seed=0)
    remeasured = held_out_checks(tuple(card.tasks), checkpoint.model, folder.images[held], seed=0)
    assert remeasured == scores


def test_size_channels_and_options_reach_the_card(images_dir: Path, tmp_path: Path) -> None:
    args = train_args(images_dir, tmp_path, "vae", "grey-vae", "--size", "24x12", "--channels", "1",
                      "--latent-size", "3", "--held-out", "0.25", "--seed", "5")  # fmt: skip
    assert main(args) == 0
    card = json.loads((tmp_path / "grey-vae" / "config.json").read_text())
    assert card["input"] == {"channels": 1, "height": 12, "width": 24, "domain": DOMAIN}
    assert card["architecture_config"]["image_size"] == [12, 24] and card["latent_size"] == 3
    assert card["metrics"]["held_out"]["images"] == 3 and card["training"]["seed"] == 5
    assert card["training"]["dataset"]["channels"] == "grayscale: asked for"
    assert card["training"]["command"].startswith("python -m models.train --images-dir ")
    vae = load_checkpoint(tmp_path / "grey-vae").model
    assert isinstance(vae, ConvVAE) and vae.sample(2).shape == (2, 1, 12, 24)


def test_the_same_seed_gives_the_same_weights(images_dir: Path, tmp_path: Path) -> None:
    # Tensors, not the file's sha256: safetensors writes its metadata keys in hash-map order.
    weights = []
    for out in ("first", "second"):
        assert main(train_args(images_dir, tmp_path / out, "reconstruct", "again", "--epochs", "1")) == 0
        weights.append(load_checkpoint(tmp_path / out / "again").model.state_dict())
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_mixed_sizes_and_sizes_the_network_cannot_take_are_refused(tmp_path: Path, capsys: Capture) -> None:
    images_dir = write_folder(tmp_path / "mixed", count=4)
    Image.new("RGB", (20, 10)).save(images_dir / "odd.png")
    assert main(train_args(images_dir, tmp_path / "out", "reconstruct", "mixed")) == 1
    message = capsys.readouterr().err
    assert "2 different sizes" in message and "20x10 (1 images, e.g. odd.png)" in message and "--size" in message

    assert main(train_args(images_dir, tmp_path / "out", "reconstruct", "odd", "--size", "30")) == 1
    assert "multiples of 4" in capsys.readouterr().err
    assert main(train_args(images_dir, tmp_path / "out", "super-resolve", "odd", "--size", "30", "--scale", "4")) == 1
    assert "divisible by 4" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["mnist-ae"], "leave out the recipe name"),
        (["--name", "Bad Name"], "--name 'Bad Name'"),
        (["--held-out", "1.5"], "--held-out"),
        (["--size", "big"], "WIDTHxHEIGHT"),
    ],
)
def test_bad_arguments_are_refused_before_reading_anything(extra: list[str], message: str, capsys: Capture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--images-dir", "/nonexistent", "--task", "denoise", "--name", "fine", *extra])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_images_dir_needs_a_task_and_a_name(capsys: Capture) -> None:
    with pytest.raises(SystemExit):
        main(["--images-dir", "/nonexistent", "--name", "fine"])
    assert "--images-dir needs --task and --name" in capsys.readouterr().err


def test_without_epochs_a_small_folder_gets_enough_steps() -> None:
    assert default_epochs(270, batch_size=64) == 300  # 5 steps an epoch: 1,500 steps
    assert default_epochs(100_000, batch_size=64) == MIN_EPOCHS  # 1,563 steps an epoch
    for images in (2, 63, 64, 65, 1000, 5000):
        epochs = default_epochs(images, batch_size=64)
        assert epochs >= MIN_EPOCHS and epochs * -(-images // 64) >= MIN_STEPS
