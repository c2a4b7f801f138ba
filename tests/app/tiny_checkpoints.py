"""Tiny checkpoints trained in seconds on drawn digits, so the tests check real outputs without real ones."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from drawn_digits import digit_batch
from torch.nn import functional as F

from models.architectures import (
    ConvAutoencoder,
    ConvAutoencoderConfig,
    ConvVAE,
    ConvVAEConfig,
    SuperResolutionAE,
    SuperResolutionAEConfig,
)
from models.checkpoint import FINISHED_AT, InputSpec, ModelCard, save_checkpoint
from models.data.corruptions import downscale, gaussian_noise

NOISE_SIGMA = 0.4
# When tiny-ae's card says it was trained (the other tiny cards do not say): `created` of /v1/models.
TINY_AE_FINISHED_AT = "2026-01-02T03:04:05+00:00"


def _train(
    model: torch.nn.Module,
    make_batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    lr: float = 3e-3,
) -> None:
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        inputs, targets = make_batch(step)
        loss = loss_fn(model(inputs), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()


def _card(name: str, tasks: list[str], size: int = 28, **extra: object) -> ModelCard:
    return ModelCard(
        name=name,
        tasks=tasks,
        architecture="",
        architecture_config={},
        input=InputSpec(channels=1, height=size, width=size, domain="mnist"),
        description="tiny test model",
        training={"steps": "few", "data": "digits drawn by tests/app/drawn_digits.py"},
        metrics={"test_metric": 1.0},
        **extra,  # type: ignore[arg-type]
    )


def build_checkpoints(root: Path, steps: int = 200) -> dict[str, float]:
    """Write the tiny checkpoints into `root`; returns seconds spent training each (a few on 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: more threads only fight over the cores
    try:
        return _build(root, steps)
    finally:
        torch.set_num_threads(threads)


def _build(root: Path, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    digits = digit_batch(640, seed=1)  # (640, 1, 28, 28)
    timings: dict[str, float] = {}

    def batch(step: int) -> torch.Tensor:
        start = (step * 32) % len(digits)
        return digits[start : start + 32]

    # Trained as a denoiser (binary cross-entropy: plain MSE often collapses to black this early).
    started = time.perf_counter()
    denoiser = ConvAutoencoder(ConvAutoencoderConfig(widths=(16, 16, 16)))
    _train(denoiser, lambda s: (gaussian_noise(batch(s), NOISE_SIGMA, seed=s), batch(s)), steps, F.binary_cross_entropy)
    card = _card("tiny-denoise", ["denoise", "reconstruct", "embed"], latent_size=denoiser.embedding_size)
    save_checkpoint(denoiser, card, root / "tiny-denoise")
    timings["tiny-denoise"] = time.perf_counter() - started

    started = time.perf_counter()
    sr = SuperResolutionAE(SuperResolutionAEConfig(scale=2, width=16, encoder_layers=2))
    _train(sr, lambda s: (downscale(batch(s), 2, "area"), batch(s)), steps, F.mse_loss)
    save_checkpoint(sr, _card("tiny-sr-x2", ["super-resolve"], size=14, scale=2), root / "tiny-sr-x2")
    timings["tiny-sr-x2"] = time.perf_counter() - started

    # Untrained models where only determinism and shapes are checked (embeddings, VAE sampling, the grid).
    ae = ConvAutoencoder(ConvAutoencoderConfig(widths=(8, 8, 8), latent_size=16))
    ae_card = _card("tiny-ae", ["reconstruct", "embed"], latent_size=16)
    ae_card.training[FINISHED_AT] = TINY_AE_FINISHED_AT
    save_checkpoint(ae, ae_card, root / "tiny-ae")
    vae = ConvVAE(ConvVAEConfig(latent_size=2, widths=(8, 16), hidden_size=32))
    save_checkpoint(vae, _card("tiny-vae-2d", ["vae", "embed", "reconstruct"], latent_size=2), root / "tiny-vae-2d")
    vae3 = ConvVAE(ConvVAEConfig(latent_size=3, widths=(8, 16), hidden_size=32))
    save_checkpoint(vae3, _card("tiny-vae-3d", ["vae"], latent_size=3), root / "tiny-vae-3d")

    # A checkpoint whose weights do not match the card's sha256: listed unavailable, never served.
    broken = ConvAutoencoder(ConvAutoencoderConfig(widths=(4, 4, 4)))
    save_checkpoint(broken, _card("broken", ["reconstruct"]), root / "broken")
    weights = root / "broken" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    # A model card that is not even JSON.
    (root / "broken-card").mkdir()
    (root / "broken-card" / "config.json").write_text("{not json")
    # Valid files whose card promises a task the architecture cannot do: fails its warm-up pass.
    mismatch = SuperResolutionAE(SuperResolutionAEConfig(scale=2, width=4, encoder_layers=1))
    save_checkpoint(mismatch, _card("mismatch", ["denoise"]), root / "mismatch")
    return timings


DEFAULT_MODELS = {
    "denoise": "tiny-denoise",
    "super_resolve": "tiny-sr-x2",
    "reconstruct": "tiny-denoise",
    "embed": "tiny-ae",
    "vae": "tiny-vae-2d",
    "manifold": "tiny-vae-2d",
}
