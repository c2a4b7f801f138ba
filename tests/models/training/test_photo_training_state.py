"""Training that accumulates: continuing a served checkpoint, the compact state's round trip, the validation
curve, stopping on SIGTERM, publishing only on a gain, and the background rotation (tiny generated data)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from photo_fixtures import run_rotation, small_recipe, write_photo_data

from models.architectures import FFDNet, FFDNetConfig
from models.checkpoint import ModelCard, load_checkpoint, read_card
from models.evaluation import EvaluationContext, EvaluationSettings, evaluate_checkpoints
from models.training import rotation
from models.training.photo import denoise as ffdnet_training
from models.training.photo.state import RunState, load_state, save_state
from models.training.photo.validation import load_validation_set, validation_psnr

SMALL: dict[str, Any] = {"precision": "float32", "threads": 1, "command": "test"}


@pytest.fixture(scope="module")
def photo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_photo_data(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def served(photo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 'served' tiny gray checkpoint: 2 steps from scratch, published."""
    out = tmp_path_factory.mktemp("served")
    recipe = small_recipe("photo-denoise-gray")
    ffdnet_training.run(recipe, photo_data, out, None, 2, **SMALL, state_root=out / "first-state", publish="always")
    return out


def copy_served(served: Path, tmp_path: Path) -> Path:
    out = tmp_path / "checkpoints" / "photo-denoise-gray"
    out.mkdir(parents=True)
    for item in (served / "photo-denoise-gray").iterdir():
        (out / item.name).write_bytes(item.read_bytes())
    return out.parent


def test_without_state_it_continues_the_served_weights(photo_data: Path, served: Path, tmp_path: Path) -> None:
    out = copy_served(served, tmp_path)
    recipe = small_recipe("photo-denoise-gray")
    origin = load_checkpoint(out / recipe.name)
    # no steps: the weights are the served ones, and the card carries the cumulative figures forward
    card = ffdnet_training.run(recipe, photo_data, out, None, 0, **SMALL, state_root=tmp_path / "s", publish="always")
    assert card is not None
    reloaded = load_checkpoint(out / recipe.name).model.state_dict()
    for key, tensor in origin.model.state_dict().items():
        assert torch.equal(tensor, reloaded[key]), key
    run = json.loads((tmp_path / "s" / recipe.name / "run.json").read_text())
    assert run["continued"] and run["origin_patch_passes"] == origin.card.training["patch_passes"] == 8
    assert card.training["patch_passes"] == 8 and card.training["continued_training"]["steps"] == 0

    # then 3 steps more: cumulative patch passes, a constant-rate schedule after the warm-up, the first
    # validation point being the served weights' own figures
    card = ffdnet_training.run(recipe, photo_data, out, None, 3, **SMALL, state_root=tmp_path / "s", publish="always")
    assert card is not None and card.training["patch_passes"] == 8 + 3 * recipe.batch_size
    assert card.training["steps"] == 2 + 3
    run = json.loads((tmp_path / "s" / recipe.name / "run.json").read_text())
    validation = load_validation_set(photo_data, recipe.validation_folder, 1)
    expected = validation_psnr(origin.model, validation)
    assert {k: run["validation"][0][k] for k in expected} == expected
    assert [point["patch_passes"] for point in run["validation"]] == [8, 8 + 12]

    # a publish-only invocation with other threads states the threads the weights were trained with
    others = {**SMALL, "threads": 2}
    card = ffdnet_training.run(recipe, photo_data, out, None, 0, **others, state_root=tmp_path / "s", publish="always")
    assert card is not None and card.training["torch_threads"] == 1


def test_continued_rate_warms_up_then_stays() -> None:
    recipe = small_recipe("photo-denoise-gray")
    rates = [ffdnet_training.continued_rate(step, recipe) for step in range(0, 3 * recipe.continue_warmup_steps)]
    assert rates[0] < rates[recipe.continue_warmup_steps // 2] < recipe.continue_learning_rate
    assert set(rates[recipe.continue_warmup_steps :]) == {recipe.continue_learning_rate}


def test_state_round_trip_is_compact(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = FFDNet(FFDNetConfig(channels=1, depth=3, width=8))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        optimiser.zero_grad()
        model(torch.rand(2, 1, 8, 8), 20.0).pow(2).mean().backward()
        optimiser.step()
    generators = {"data": torch.Generator().manual_seed(5)}
    torch.rand(4, generator=generators["data"])
    state = RunState(step=3, seconds=1.5, origin_patch_passes=100, continued=True, batch_size=4, curve=[[112, 0.1]])
    average = FFDNet(FFDNetConfig(channels=1, depth=3, width=8))
    ffdnet_training.update_average(average, model, decay=0.5)
    save_state(tmp_path, model, optimiser, state, generators, average)

    other = FFDNet(FFDNetConfig(channels=1, depth=3, width=8))
    other_optimiser = torch.optim.Adam(other.parameters(), lr=1e-3)
    other_generators = {"data": torch.Generator().manual_seed(99)}
    other_average = FFDNet(FFDNetConfig(channels=1, depth=3, width=8))
    restored = load_state(tmp_path, other, other_optimiser, other_generators, other_average)
    assert restored == state and restored.patch_passes == 112
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, other.state_dict()[key]), key
        assert torch.equal(average.state_dict()[key], other_average.state_dict()[key]), key
    assert not torch.equal(average.state_dict()["body.0.weight"], model.state_dict()["body.0.weight"])
    for parameter, other_parameter in zip(model.parameters(), other.parameters(), strict=True):
        before, after = optimiser.state[parameter], other_optimiser.state[other_parameter]
        assert float(after["step"]) == 3 and not after["exp_avg"].any()  # first moments are not stored
        assert torch.allclose(after["exp_avg_sq"], before["exp_avg_sq"], rtol=1e-2, atol=0)  # bfloat16
    assert torch.equal(torch.rand(4, generator=generators["data"]), torch.rand(4, generator=other_generators["data"]))
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["patch_passes"] == 112 and record["minutes"] == round(1.5 / 60, 2)
    assert load_state(tmp_path / "missing", other, other_optimiser, other_generators) is None


def test_validation_points_are_logged_and_a_sigterm_saves_the_state(
    photo_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = small_recipe("photo-denoise-color")
    draw = ffdnet_training.PatchSampler.draw
    calls = {"count": 0}

    def signalling_draw(self: ffdnet_training.PatchSampler, count: int) -> torch.Tensor:
        calls["count"] += 1
        if calls["count"] == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # handled: the step finishes, then the loop stops
        return draw(self, count)

    monkeypatch.setattr(ffdnet_training.PatchSampler, "draw", signalling_draw)
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    ffdnet_training.install_stop_handlers()
    try:
        card = ffdnet_training.run(
            recipe, photo_data, tmp_path, None, 50, **SMALL, state_root=tmp_path / "s", validate_every_s=0.0
        )
    finally:
        ffdnet_training.STOP.requested = False
        for number, handler in previous.items():
            signal.signal(number, handler)
    assert card is None and not (tmp_path / recipe.name).exists()  # stopped: nothing published
    run = json.loads((tmp_path / "s" / recipe.name / "run.json").read_text())
    assert run["step"] == 4
    # a point for the untrained network, then one after every step (validate_every_s=0)
    assert [point["patch_passes"] for point in run["validation"]] == [0, 4, 8, 12, 16]
    assert {"sigma_15", "sigma_25", "sigma_50", "mean"} <= set(run["validation"][-1])


def test_if_better_keeps_the_served_checkpoint_unless_validation_improved(
    photo_data: Path, served: Path, tmp_path: Path
) -> None:
    out = copy_served(served, tmp_path)
    recipe = small_recipe("photo-denoise-gray")
    model = load_checkpoint(out / recipe.name).model
    assert isinstance(model, FFDNet)
    validation = load_validation_set(photo_data, recipe.validation_folder, 1)
    served_mean = validation_psnr(model, validation)["mean"]
    before = (out / recipe.name / "model.safetensors").read_bytes()
    state = RunState(batch_size=4, validation=[{"mean": served_mean}])

    def make_card(training: dict[str, Any] | None) -> ModelCard:
        card = read_card(out / recipe.name)
        card.training = {**card.training, "published": True}
        return card

    kept = ffdnet_training.publish_checkpoint(model, state, out / recipe.name, validation, "if-better", None, make_card)
    assert kept is None and (out / recipe.name / "model.safetensors").read_bytes() == before
    state.validation.append({"mean": served_mean + 0.01})
    card = ffdnet_training.publish_checkpoint(model, state, out / recipe.name, validation, "if-better", None, make_card)
    assert card is not None and read_card(out / recipe.name).training["published"] is True
    with pytest.raises(ValueError, match="publish"):
        ffdnet_training.publish_checkpoint(model, state, out / recipe.name, validation, "sometimes", None, make_card)


def test_the_rotation_trains_each_model_in_turn_without_publishing(
    photo_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = {name: small_recipe(name) for name in ("photo-denoise-gray", "photo-denoise-color")}
    out = tmp_path / "out"
    for recipe in small.values():  # served checkpoints to continue
        ffdnet_training.run(recipe, photo_data, out, None, 1, **SMALL, state_root=tmp_path / "first", publish="always")
    served = {name: (out / name / "model.safetensors").read_bytes() for name in small}
    monkeypatch.setattr(rotation, "PHOTO_DENOISE_RECIPES", small)
    code = run_rotation(
        [
            *("--data-dir", str(photo_data), "--out", str(out), "--state-dir", str(tmp_path / "s")),
            *("--chunk-minutes", "0.002", "--rounds", "2", "--precision", "float32"),
            *small,
        ]
    )
    assert code == 0
    for name in small:
        assert (out / name / "model.safetensors").read_bytes() == served[name]  # never published
        run = json.loads((tmp_path / "s" / name / "run.json").read_text())
        assert run["continued"] and run["step"] >= 2
        # the served weights' point, then one at the end of each of the two chunks
        assert len(run["validation"]) == 3 and run["validation"][0]["patch_passes"] == small[name].batch_size


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (bench/gpu_session.sh runs these)")
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_cuda_training_resumes_and_publishes_cpu_loadable_weights(
    photo_data: Path, tmp_path: Path, precision: str
) -> None:
    recipe = small_recipe("photo-denoise-color")
    arguments: dict[str, Any] = {"precision": precision, "threads": 1, "command": "test", "device": "cuda"}
    ffdnet_training.run(recipe, photo_data, tmp_path, None, 2, **arguments, state_root=tmp_path / "s", publish="never")
    card = ffdnet_training.run(recipe, photo_data, tmp_path, None, 4, **arguments, state_root=tmp_path / "s")
    assert card is not None and card.training["device"] == "cuda" and card.training["steps"] == 4
    loaded = load_checkpoint(tmp_path / recipe.name)  # on the CPU
    run = json.loads((tmp_path / "s" / recipe.name / "run.json").read_text())
    validation = load_validation_set(photo_data, recipe.validation_folder, 3)
    on_cpu = validation_psnr(loaded.model, validation)
    assert on_cpu["mean"] == pytest.approx(run["validation"][-1]["mean"], abs=0.05)  # measured on CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (bench/gpu_session.sh runs these)")
def test_cuda_evaluation_of_a_photo_denoiser(photo_data: Path, served: Path, tmp_path: Path) -> None:
    out = copy_served(served, tmp_path)
    settings = EvaluationSettings(
        photo_sigmas_gray=(25,),
        photo_baseline_images_gray=1,
        photo_baseline_sigmas_gray=(25,),
        photo_speed_baseline=False,
    )
    context = EvaluationContext(
        data_dir=photo_data,
        figures_dir=tmp_path / "docs",
        settings=settings,
        natural_dir=photo_data,
        device=torch.device("cuda"),
    )
    cards = evaluate_checkpoints(out, context, tmp_path / "docs" / "report.md", "test")
    figures = cards["photo-denoise-gray"].metrics["denoise"]["sets"]["BSD68"]["sigmas"]["25"]["upload"]
    assert {"noisy input", "model", "model, sigma estimated"} <= set(figures)
    assert all(math.isfinite(value) for value in figures.values())


def test_the_report_draws_a_continued_cards_learning_curve(served: Path, tmp_path: Path) -> None:
    from models.evaluation.reporting.model_report import render_card

    card = read_card(served / "photo-denoise-gray")
    points = [
        {"patch_passes": 8, "minutes": 0.1, "sigma_15": 30.0, "sigma_25": 28.0, "sigma_50": 25.0, "mean": 27.667},
        {"patch_passes": 20, "minutes": 0.2, "sigma_15": 30.5, "sigma_25": 28.25, "sigma_50": 25.5, "mean": 28.083},
    ]
    card.training["continued_training"] = {"steps": 3, "validation_curve": points}
    text = "\n".join(render_card(card, tmp_path))
    assert "| 20 | 0.2 | 30.50 | 28.25 | 25.50 | 28.08 |" in text
    assert "validation_curve" not in text  # in the table, not repeated as JSON
    assert (tmp_path / "photo-denoise-gray-learning-curve.png").is_file()


def test_a_change_of_loss_or_rate_starts_a_phase_the_card_states(
    photo_data: Path, served: Path, tmp_path: Path
) -> None:
    out, state_root = copy_served(served, tmp_path), tmp_path / "s"
    recipe = small_recipe("photo-denoise-gray")
    ffdnet_training.run(recipe, photo_data, out, None, 2, **SMALL, state_root=state_root, publish="never")
    changed = dataclasses.replace(recipe, loss="psnr", continue_learning_rate=1e-5)
    for _ in range(2):  # the second invocation goes on with the same phase
        card = ffdnet_training.run(changed, photo_data, out, None, 2, **SMALL, state_root=state_root, publish="always")
    assert card is not None
    phases = card.training["continued_training"]["phases"]
    assert phases == [
        {"from_patch_passes": 8, "loss": "mse", "learning_rate": recipe.continue_learning_rate},
        {"from_patch_passes": 8 + 2 * recipe.batch_size, "loss": "psnr", "learning_rate": 1e-5},
    ]
    schedule = card.training["continued_training"]["learning_rate_schedule"]
    assert "from 16 patch passes constant 1e-05, loss the mean over patches" in schedule
