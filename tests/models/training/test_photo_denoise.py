"""Photo denoisers of every noise level: FFDNet, the noise estimator, training and evaluation on generated images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from photo_fixtures import scene, small_recipe, write_photo_data

from models.architectures import FFDNet, FFDNetConfig, build_model
from models.checkpoint import load_checkpoint, read_card
from models.evaluation import EvaluationContext, EvaluationSettings, evaluate_checkpoints
from models.quality.noise_estimation import estimate_plane_sigma, estimate_sigma
from models.train import main as train_main
from models.training.photo import denoise as ffdnet_training
from models.training.photo import state as photo_state


def tiny_ffdnet(channels: int = 1, seed: int = 0) -> FFDNet:
    torch.manual_seed(seed)
    model = FFDNet(FFDNetConfig(channels=channels, depth=4, width=8))
    with torch.no_grad():  # non-trivial batch-norm statistics, so eval mode is not the identity
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_any_size_and_batch(channels: int) -> None:
    model = tiny_ffdnet(channels)
    for height, width in ((20, 24), (17, 23), (2, 2), (1, 5)):
        images = torch.rand(2, channels, height, width)
        out = model.denoise_at(images, 25.0)
        assert out.shape == images.shape
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_the_noise_level_is_an_input() -> None:
    model = tiny_ffdnet()
    noisy = torch.rand(1, 1, 16, 16)
    assert not torch.allclose(model(noisy, 5.0), model(noisy, 60.0))
    # a scalar, a (B,) vector and a constant full-resolution map are the same noise level
    batch = noisy.repeat(3, 1, 1, 1)
    by_scalar = model(batch, 30.0)
    by_vector = model(batch, torch.tensor([30.0, 30.0, 30.0]))
    by_map = model(batch, torch.full((3, 1, 16, 16), 30.0))
    assert torch.allclose(by_scalar, by_vector) and torch.allclose(by_scalar, by_map)
    # a map that varies over the image changes only where it differs (within the receptive radius)
    varying = torch.full((1, 1, 16, 16), 30.0)
    varying[..., :, 8:] = 60.0
    mixed = model(noisy, varying)
    assert not torch.allclose(mixed, model(noisy, 30.0))


@pytest.mark.parametrize("channels", [1, 3])
def test_tiled_equals_untiled(channels: int) -> None:
    model = tiny_ffdnet(channels)
    images = torch.rand(2, channels, 75, 61, generator=torch.Generator().manual_seed(1))
    whole = model.denoise_at(images, torch.tensor([20.0, 45.0]), tile=256)
    tiled = model.denoise_at(images, torch.tensor([20.0, 45.0]), tile=2 * model.receptive_radius + 12)
    assert torch.allclose(whole, tiled, atol=1e-5)


def test_each_image_gets_its_own_noise_level() -> None:
    model = tiny_ffdnet()
    images = torch.rand(2, 1, 20, 20)
    together = model.denoise_at(images, torch.tensor([10.0, 50.0]))
    assert torch.allclose(together[0], model.denoise_at(images[:1], 10.0)[0], atol=1e-6)
    assert torch.allclose(together[1], model.denoise_at(images[1:], 50.0)[0], atol=1e-6)


def test_registered_and_rebuilt_from_its_card_config() -> None:
    model = tiny_ffdnet(3)
    rebuilt = build_model("ffdnet", model.config_dict())
    assert isinstance(rebuilt, FFDNet) and rebuilt.config == model.config
    with pytest.raises(ValueError):
        FFDNetConfig(channels=2)


@pytest.mark.parametrize("sigma", [5.0, 15.0, 30.0, 50.0])
def test_noise_estimate_on_a_generated_picture(sigma: float) -> None:
    clean = scene(160, 200)
    noisy = clean + sigma * np.random.default_rng(int(sigma)).standard_normal(clean.shape)
    estimate = estimate_sigma(noisy)
    assert abs(estimate - sigma) <= 0.05 * sigma + 0.5, (estimate, sigma)


def test_noise_estimate_of_a_clean_picture_is_small_and_colour_is_averaged() -> None:
    assert estimate_sigma(scene(96, 96)) < 1.0
    colour = scene(96, 128, channels=3)
    noisy = colour + 20 * np.random.default_rng(3).standard_normal(colour.shape)
    planes = [estimate_plane_sigma(noisy[..., channel]) for channel in range(3)]
    assert estimate_sigma(noisy) == pytest.approx(float(np.mean(planes)))
    assert abs(estimate_sigma(noisy) - 20) < 1.5


def test_noise_estimate_of_an_8_bit_upload_skips_clipped_patches() -> None:
    clean = scene(160, 200)
    clean[:40, :60] = 0  # a black region where the noise is clipped away
    noisy = np.round(np.clip(clean + 20 * np.random.default_rng(5).standard_normal(clean.shape), 0, 255))
    assert abs(estimate_sigma(noisy) - 20) < 2.0


def test_noise_estimate_refuses_a_tiny_image() -> None:
    with pytest.raises(ValueError, match="at least 7x7"):
        estimate_plane_sigma(np.zeros((5, 40)))


def test_model_estimate_noise_reads_its_tensor_images() -> None:
    model = tiny_ffdnet(3)
    colour = scene(64, 80, channels=3)
    noisy = np.clip(colour + 25 * np.random.default_rng(2).standard_normal(colour.shape), 0, 255).round()
    batch = torch.from_numpy(noisy / 255.0).permute(2, 0, 1)[None].float()
    estimate = model.estimate_noise(batch)
    assert estimate.shape == (1,) and abs(float(estimate[0]) - 25) < 3


@pytest.fixture(scope="module")
def photo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_photo_data(tmp_path_factory.mktemp("photos"))


@pytest.mark.parametrize("name", ["photo-denoise-gray", "photo-denoise-color"])
def test_training_writes_a_loadable_checkpoint(name: str, photo_data: Path, tmp_path: Path) -> None:
    card = ffdnet_training.run(
        small_recipe(name),
        photo_data,
        tmp_path,
        minutes=None,
        steps=3,
        precision="float32",
        threads=1,
        command="test",
        state_root=tmp_path / "state",
    )
    loaded = load_checkpoint(tmp_path / name)
    assert isinstance(loaded.model, FFDNet) and loaded.card.weights_sha256 == card.weights_sha256
    assert card.input.any_size and card.input.domain == "natural" and card.tasks == ["denoise"]
    assert card.training["steps"] == 3 and card.training["patch_passes"] == 12
    assert set(card.training["held_out_validation_upload_protocol"]) == {"sigma_15", "sigma_25", "sigma_50"}
    assert (tmp_path / name / "samples.png").is_file() and (tmp_path / name / "loss.png").is_file()


def test_an_interrupted_run_resumes_to_the_same_weights(
    photo_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = small_recipe("photo-denoise-gray")
    arguments = {"minutes": None, "steps": 6, "precision": "float32", "threads": 1, "command": "test"}
    ffdnet_training.run(recipe, photo_data, tmp_path / "straight", **arguments, state_root=tmp_path / "state1")

    monkeypatch.setattr(ffdnet_training, "SAVE_EVERY_S", 0.0)  # state written after every step
    monkeypatch.setattr(photo_state, "FULL_MOMENTS", True)  # exact: the compact form drops Adam's first moments
    draw = ffdnet_training.PatchSampler.draw
    calls = {"count": 0}

    def failing_draw(self: ffdnet_training.PatchSampler, count: int) -> torch.Tensor:
        calls["count"] += 1
        if calls["count"] == 4:
            raise KeyboardInterrupt
        return draw(self, count)

    monkeypatch.setattr(ffdnet_training.PatchSampler, "draw", failing_draw)
    with pytest.raises(KeyboardInterrupt):
        ffdnet_training.run(recipe, photo_data, tmp_path / "resumed", **arguments, state_root=tmp_path / "state2")
    state = json.loads((tmp_path / "state2" / recipe.name / "run.json").read_text())
    assert state["step"] == 3
    monkeypatch.setattr(ffdnet_training.PatchSampler, "draw", draw)
    ffdnet_training.run(recipe, photo_data, tmp_path / "resumed", **arguments, state_root=tmp_path / "state2")

    straight = load_checkpoint(tmp_path / "straight" / recipe.name).model.state_dict()
    resumed = load_checkpoint(tmp_path / "resumed" / recipe.name).model.state_dict()
    for key, tensor in straight.items():
        assert torch.allclose(tensor.float(), resumed[key].float(), atol=1e-6), key


def test_command_line_smoke(photo_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = train_main(
        [
            "photo-denoise-gray",
            "--data-dir",
            str(photo_data),
            "--out",
            str(tmp_path),
            "--steps",
            "1",
            "--precision",
            "bfloat16",
            "--limit-images",
            "5",
            "--state-dir",
            str(tmp_path / "state"),
        ]
    )
    assert code == 0
    card = read_card(tmp_path / "photo-denoise-gray")
    assert card.training["precision"].startswith("bfloat16")
    assert card.training["command"].startswith("python -m models.train photo-denoise-gray")
    assert "held-out sigma_25" in capsys.readouterr().err


def test_command_line_asks_for_a_budget(photo_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train_main(["photo-denoise-color", "--data-dir", str(photo_data)])
    assert "--minutes" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["photo-denoise-gray", "photo-denoise-color"])
def test_evaluation_end_to_end(name: str, photo_data: Path, tmp_path: Path) -> None:
    ffdnet_training.run(
        small_recipe(name),
        photo_data,
        tmp_path / "checkpoints",
        minutes=None,
        steps=2,
        precision="float32",
        threads=1,
        command="test",
        state_root=tmp_path / "state",
    )
    settings = EvaluationSettings(
        photo_sigmas_gray=(25,),
        photo_sigmas_colour=(25,),
        photo_baseline_images_gray=1,
        photo_baseline_images_colour=1,
        photo_speed_baseline=False,
    )
    context = EvaluationContext(
        data_dir=photo_data, figures_dir=tmp_path / "docs", settings=settings, natural_dir=photo_data
    )
    cards = evaluate_checkpoints(tmp_path / "checkpoints", context, tmp_path / "docs" / "report.md", "test")
    metrics = cards[name].metrics["denoise"]
    first = "BSD68" if name.endswith("gray") else "CBSD68"
    figures = metrics["sets"][first]["sigmas"]["25"]
    for protocol in ("literature", "upload"):
        assert {"noisy input", "model", "BM3D (baseline subset)"} <= set(figures[protocol])
    assert "model, sigma estimated" in figures["upload"]
    assert metrics["noise_estimation"]["set"] == first
    assert (tmp_path / "docs" / metrics["rni15"]["figure"]).is_file()
    assert any("BM3D" in target["description"] for target in metrics["targets"])
    report = (tmp_path / "docs" / "report.md").read_text()
    assert f"{first} (" in report and "Noise estimation" in report


def test_patch_losses_weigh_patches_by_error_or_by_decibel() -> None:
    clean = torch.zeros(2, 1, 4, 4)
    errors = torch.tensor([0.01, 0.1]).view(2, 1, 1, 1)  # a low-sigma-like patch and a high-sigma-like one
    gradients = {}
    for kind in ffdnet_training.PATCH_LOSSES:
        output = (clean + errors).requires_grad_()
        objective, mse = ffdnet_training.patch_loss(output, clean, kind)
        assert float(mse) == pytest.approx(float(errors.pow(2).mean()))
        objective.backward()
        assert output.grad is not None
        gradients[kind] = output.grad.flatten(1).norm(dim=1)  # (2,): the pull on each patch
    # mse pulls 10x harder on the patch with 10x the error; psnr pulls harder on the small-error patch
    assert float(gradients["mse"][1] / gradients["mse"][0]) == pytest.approx(10.0, rel=1e-4)
    assert float(gradients["psnr"][0] / gradients["psnr"][1]) > 9.0
    with pytest.raises(ValueError, match="unknown loss"):
        ffdnet_training.patch_loss(clean, clean, "l3")


def test_command_line_overrides_the_loss_and_the_rate() -> None:
    from models.training.cli import parse_arguments, photo_denoise_recipe

    plain = photo_denoise_recipe(parse_arguments(["photo-denoise-gray", "--data-dir", "x", "--steps", "1"]))
    assert plain == ffdnet_training.PHOTO_DENOISE_RECIPES["photo-denoise-gray"]
    argv = ["photo-denoise-color", "--data-dir", "x", "--steps", "1", "--loss", "psnr", "--learning-rate", "2e-5"]
    changed = photo_denoise_recipe(parse_arguments(argv))
    assert (changed.loss, changed.learning_rate, changed.continue_learning_rate) == ("psnr", 2e-5, 2e-5)
    assert changed.config == ffdnet_training.PHOTO_DENOISE_RECIPES["photo-denoise-color"].config
