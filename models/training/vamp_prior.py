"""The VampPrior (Tomczak & Welling 2018) for the ConvVAE, a lever of models.evaluation.vae_levers (never served).

The prior is the encoder's own posterior averaged over K learned pseudo-inputs u_k (images, 1x28x28):
p(z) = (1/K) sum_k q(z | u_k). A standard normal prior pulls every posterior towards one blob, which costs KL
and blurs what the decoder can tell apart; a mixture of posteriors can follow the aggregate posterior instead.
The KL to a mixture has no closed form, so the objective estimates it with the reparameterised sample
(log q(z|x) - log p(z)), as the paper does, under the baseline lever's linear KL warm-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from models.architectures import Architecture, ConvVAE, ConvVAEConfig
from models.training.importance_weighted import log_normal
from models.training.objectives import BernoulliElbo

# Latent vectors per chunk of the mixture's log-density: the evaluation asks it of 200 samples x 50 digits at once,
# and (rows, K, D) of them in one piece would be 10,000 x 500 x 16 floats, about 320 MB per temporary.
MIXTURE_CHUNK_ROWS = 1024


@dataclass(frozen=True)
class VampPriorVAEConfig(ConvVAEConfig):
    pseudo_inputs: int = 500  # K, the paper's value for MNIST
    # The paper draws the pseudo-inputs' pre-activations from N(0.05, 0.01^2): faint grey images, inside the
    # hardtanh's [0, 1] so that every one starts with a gradient.
    init_mean: float = 0.05
    init_std: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pseudo_inputs < 1:
            raise ValueError(f"invalid VampPrior config: {self}")


class VampPriorVAE(ConvVAE):
    """A ConvVAE whose prior is the mixture of its encoder's posteriors on K learned pseudo-inputs.

    The lever builds it directly (models.training.loop.TrainOptions.architecture_class), not through the
    registry: it is measured, not served, and the service's architectures stay the ones with checkpoints.
    """

    name = "vampprior-conv-vae"
    config_class = VampPriorVAEConfig
    config: VampPriorVAEConfig

    def __init__(self, config: VampPriorVAEConfig) -> None:
        super().__init__(config)
        shape = (config.pseudo_inputs, config.in_channels, *config.image_size)
        self.pseudo_input_parameters = nn.Parameter(torch.randn(shape) * config.init_std + config.init_mean)

    def pseudo_inputs(self) -> torch.Tensor:
        """(K, C, H, W) in [0, 1]: the hardtanh keeps them images, as the encoder only ever saw digits."""
        return F.hardtanh(self.pseudo_input_parameters, 0.0, 1.0)

    def log_prior(self, latents: torch.Tensor) -> torch.Tensor:
        """log p(z) = logsumexp_k log q(z | u_k) - log K, over the last dimension: (..., D) -> (...)."""
        means, log_variances = self.encode(self.pseudo_inputs())  # (K, D) each
        rows = latents.reshape(-1, 1, latents.shape[-1])  # (N, 1, D) against (K, D)
        parts = [
            torch.logsumexp(log_normal(chunk, means, log_variances), dim=1)  # (n, K) -> (n,)
            for chunk in rows.split(MIXTURE_CHUNK_ROWS)
        ]
        return (torch.cat(parts) - math.log(self.config.pseudo_inputs)).reshape(latents.shape[:-1])

    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """n images from the mixture prior: a pseudo-input drawn uniformly, then z ~ q(z | u_k) (spread scaled by
        the temperature)."""
        means, log_variances = self.encode(self.pseudo_inputs())
        picks = torch.randint(0, self.config.pseudo_inputs, (n,), generator=generator).to(means.device)
        scale = temperature * (0.5 * log_variances[picks]).exp()
        noise = torch.randn((n, self.latent_size), generator=generator, dtype=means.dtype).to(means.device)
        return self.decode(means[picks] + scale * noise)


@dataclass(frozen=True)
class VampPriorElbo(BernoulliElbo):
    """The negative ELBO under the VampPrior on dynamically binarised digits, nats per image: the reconstruction
    plus the warm-up's weight times the one-sample KL estimate log q(z|x) - log p(z)."""

    name: ClassVar[str] = "bernoulli-elbo-vampprior"
    loss_name: ClassVar[str] = "negative ELBO in nats per image (VampPrior, one-sample KL, KL warm-up)"
    trains: ClassVar[type[ConvVAE]] = VampPriorVAE

    def loss(
        self,
        model: Architecture,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        epochs_done: float,
        generator: torch.Generator,
    ) -> torch.Tensor:
        if not isinstance(model, VampPriorVAE):
            raise TypeError(f"{self.name} trains a VampPriorVAE, got {type(model).__name__}")
        reconstruction, kl = vamp_prior_elbo_terms(model, inputs, targets, generator)
        return (reconstruction + self.kl_weight(epochs_done) * kl).mean()


def vamp_prior_elbo_terms(
    model: VampPriorVAE, inputs: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (B,): -log p(x|z) and log q(z|x) - log p(z) at one reparameterised z ~ q(z|x)."""
    mean, log_variance = model.encode(inputs)  # (B, D) each
    latents = model.reparameterise(mean, log_variance, generator)
    logits = model.decode_logits(latents)
    reconstruction = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).sum(dim=1)
    kl = log_normal(latents, mean, log_variance) - model.log_prior(latents)
    return reconstruction, kl
