"""save -> load round trip, and the loader's refusals, each naming the file at fault."""

from __future__ import annotations

import datetime
import json
import os
import stat
from pathlib import Path

import pytest
import torch

from models.architectures import ConvAutoencoder, ConvAutoencoderConfig, ConvVAE, ConvVAEConfig
from models.checkpoint import (
    CARD_FILE,
    FINISHED_AT,
    WEIGHTS_FILE,
    CheckpointError,
    InputSpec,
    ModelCard,
    load_checkpoint,
    read_card,
    save_checkpoint,
    sha256_of,
    update_metrics,
    utc_now_iso,
)


def tiny_model() -> ConvAutoencoder:
    torch.manual_seed(0)
    return ConvAutoencoder(ConvAutoencoderConfig(widths=(3, 4, 5), latent_size=6))


def card(name: str = "tiny") -> ModelCard:
    return ModelCard(
        name=name,
        tasks=["reconstruct", "embed"],
        architecture="",
        architecture_config={},
        input=InputSpec(channels=1, height=28, width=28),
        latent_size=6,
        training={"recipe": "test"},
    )


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    directory = tmp_path / "tiny"
    save_checkpoint(tiny_model(), card(), directory)
    return directory


def test_round_trip_is_bit_exact(saved: Path) -> None:
    original = tiny_model()
    loaded = load_checkpoint(saved)
    assert loaded.card.architecture == "conv-autoencoder"
    assert loaded.card.architecture_config == {"in_channels": 1, "widths": [3, 4, 5], "latent_size": 6}
    assert loaded.card.weights_sha256 == sha256_of(saved / WEIGHTS_FILE)
    assert not loaded.model.training
    state, loaded_state = original.state_dict(), loaded.model.state_dict()
    assert state.keys() == loaded_state.keys()
    for key in state:
        assert torch.equal(state[key], loaded_state[key]), key
    images = torch.rand(2, 1, 28, 28)
    original.eval()
    assert torch.equal(original(images), loaded.model(images))


def test_the_same_weights_give_the_same_file(tmp_path: Path) -> None:
    """Reproducible training must reproduce the sha256 too, not only the tensors."""
    sums = {save_checkpoint(tiny_model(), card(), tmp_path / str(run) / "tiny").weights_sha256 for run in range(8)}
    assert len(sums) == 1


def test_the_weights_are_as_readable_as_the_card(tmp_path: Path) -> None:
    """Another account (the container's non-root user) must be able to read what training wrote."""
    previous = os.umask(0o022)
    try:
        save_checkpoint(tiny_model(), card(), tmp_path / "tiny")
    finally:
        os.umask(previous)
    modes = {stat.S_IMODE((tmp_path / "tiny" / name).stat().st_mode) for name in (WEIGHTS_FILE, CARD_FILE)}
    assert modes == {0o644}


def test_vae_round_trip(tmp_path: Path) -> None:
    model = ConvVAE(ConvVAEConfig(latent_size=2, widths=(3, 4), hidden_size=8))
    vae_card = ModelCard(name="v", tasks=["vae"], architecture="", architecture_config={}, input=InputSpec(1, 28, 28))
    save_checkpoint(model, vae_card, tmp_path / "v")
    loaded = load_checkpoint(tmp_path / "v").model
    assert isinstance(loaded, ConvVAE)
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[key])


def test_missing_card(saved: Path) -> None:
    (saved / CARD_FILE).unlink()
    with pytest.raises(CheckpointError, match="model card is missing") as error:
        load_checkpoint(saved)
    assert str(saved / CARD_FILE) in str(error.value)


def test_missing_weights(saved: Path) -> None:
    (saved / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="weights file is missing") as error:
        load_checkpoint(saved)
    assert str(saved / WEIGHTS_FILE) in str(error.value)


def test_tampered_weights_fail_the_sha256(saved: Path) -> None:
    weights = saved / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last float
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 mismatch") as error:
        load_checkpoint(saved)
    assert str(weights) in str(error.value)


def test_corrupt_weights_are_refused_even_when_the_card_matches(saved: Path) -> None:
    weights = saved / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    card_path = saved / CARD_FILE
    data = json.loads(card_path.read_text())
    data["weights_sha256"] = sha256_of(weights)
    card_path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="not a readable safetensors file") as error:
        load_checkpoint(saved)
    assert str(weights) in str(error.value)


BASE_CARD = {
    "name": "tiny",
    "tasks": ["embed"],
    "architecture": "x",
    "architecture_config": {},
    "input": {"channels": 1},
}


def edit_card(directory: Path, **changes: object) -> None:
    path = directory / CARD_FILE
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_mismatched_architecture_config(saved: Path) -> None:
    edit_card(saved, architecture_config={"widths": [3, 4, 5], "latent_size": 7})
    with pytest.raises(CheckpointError, match="do not fit") as error:
        load_checkpoint(saved)
    assert str(saved / WEIGHTS_FILE) in str(error.value)


def test_weights_of_another_architecture(saved: Path) -> None:
    edit_card(saved, architecture="conv-vae", architecture_config={"latent_size": 6})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(saved)


def test_unknown_architecture_names_the_card(saved: Path) -> None:
    edit_card(saved, architecture="transformer")
    with pytest.raises(CheckpointError, match="unknown architecture") as error:
        load_checkpoint(saved)
    assert str(saved / CARD_FILE) in str(error.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "invalid model card"),
        ("[]", "must be a JSON object"),
        (json.dumps({**BASE_CARD, "input": {}}), "channels"),
        (json.dumps({**BASE_CARD, "tasks": ["fly"]}), "tasks must be"),
        (json.dumps({"name": "tiny", "surprise": 1}), "unknown model card fields"),
    ],
)
def test_invalid_cards(saved: Path, text: str, reason: str) -> None:
    (saved / CARD_FILE).write_text(text)
    with pytest.raises(CheckpointError, match=reason) as error:
        read_card(saved)
    assert str(saved / CARD_FILE) in str(error.value)


def test_card_name_must_match_its_folder(saved: Path, tmp_path: Path) -> None:
    renamed = saved.rename(tmp_path / "other")
    with pytest.raises(CheckpointError, match="does not match its folder"):
        load_checkpoint(renamed)


def test_update_metrics_keeps_the_weights_valid(saved: Path) -> None:
    update_metrics(saved, {"psnr": 21.5})
    loaded = load_checkpoint(saved)
    assert loaded.card.metrics == {"psnr": 21.5}


@pytest.mark.parametrize(
    ("finished_at", "expected"),
    [
        ("2026-11-27T00:53:07+00:00", datetime.datetime(2026, 11, 27, 0, 53, 7, tzinfo=datetime.UTC)),
        ("2026-11-27T01:53:07+01:00", datetime.datetime(2026, 11, 27, 0, 53, 7, tzinfo=datetime.UTC)),
        ("2026-11-27T00:53:07", datetime.datetime(2026, 11, 27, 0, 53, 7, tzinfo=datetime.UTC)),  # naive: UTC
        ("last tuesday", None),
        (1764204787, None),
        (None, None),
    ],
)
def test_trained_at_reads_the_cards_finish_time(finished_at: object, expected: datetime.datetime | None) -> None:
    training = {} if finished_at is None else {FINISHED_AT: finished_at}
    card = ModelCard(
        name="m", tasks=["embed"], architecture="conv-autoencoder", architecture_config={},
        input=InputSpec(channels=1, height=28, width=28), training=training,
    )  # fmt: skip
    assert card.trained_at() == expected


def test_utc_now_iso_is_read_back_by_trained_at() -> None:
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    card = ModelCard(
        name="m", tasks=["embed"], architecture="conv-autoencoder", architecture_config={},
        input=InputSpec(channels=1, height=28, width=28), training={FINISHED_AT: utc_now_iso()},
    )  # fmt: skip
    trained_at = card.trained_at()
    assert trained_at is not None and before <= trained_at <= datetime.datetime.now(datetime.UTC)
