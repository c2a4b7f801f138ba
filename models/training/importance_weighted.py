"""The importance-weighted bound (IWAE, Burda et al. 2016) as a training objective for the unconditional VAE.

Per image, with k samples z_i ~ q(z|x): log p(x) >= log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x). k = 1 is the
ELBO (with a sampled rather than analytic KL); the bound tightens as k grows, and it is the very quantity the
importance-sampled NLL evaluates (models.evaluation.mnist.vae) with k = 200. Training on it lets q be broader
than the ELBO allows and pays the decoder for every sample that explains x, which the ELBO's mean does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.nn import functional as F

from models.architectures import Architecture, ConvVAE
from models.training.objectives import BernoulliElbo


def log_normal(values: torch.Tensor, mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """log N(values; mean, exp(log_variance)) summed over the last dimension."""
    return -0.5 * (math.log(2 * math.pi) + log_variance + (values - mean).pow(2) / log_variance.exp()).sum(dim=-1)


def importance_weighted_bound(
    model: ConvVAE,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    samples: int,
    generator: torch.Generator,
    prior_weight: float = 1.0,
) -> torch.Tensor:
    """Per image (B,): the negative k-sample bound, in nats. `prior_weight` < 1 scales log p(z) - log q(z|x)
    inside every weight (a KL warm-up); at 1 it is the bound itself."""
    batch = inputs.shape[0]
    mean, log_variance = model.encode(inputs)  # (B, D) each
    # Drawn as models.evaluation.mnist.vae draws it, so that the same generator gives the evaluation's samples.
    noise = torch.randn((samples, *mean.shape), generator=generator, dtype=mean.dtype, device=mean.device)
    latents = mean + (0.5 * log_variance).exp() * noise  # (K, B, D)
    logits = model.decode_logits(latents.reshape(samples * batch, -1))  # (K*B, C, H, W)
    expanded = targets.unsqueeze(0).expand(samples, *targets.shape).reshape_as(logits)
    log_likelihood = -F.binary_cross_entropy_with_logits(logits, expanded, reduction="none").flatten(1).sum(dim=1)
    log_prior = -0.5 * (math.log(2 * math.pi) + latents.pow(2)).sum(dim=-1)  # (K, B)
    log_ratio = log_prior - log_normal(latents, mean, log_variance)  # log p(z) - log q(z|x): (K, B)
    log_weights = log_likelihood.view(samples, batch) + prior_weight * log_ratio
    return -(torch.logsumexp(log_weights, dim=0) - math.log(samples))


@dataclass(frozen=True)
class ImportanceWeightedElbo(BernoulliElbo):
    """The negative k-sample importance-weighted bound on dynamically binarised digits, nats per image."""

    name: ClassVar[str] = "bernoulli-iwae"
    loss_name: ClassVar[str] = "negative importance-weighted bound in nats per image (k samples, KL warm-up)"
    samples: int = 5  # k: the decoder runs k times per image, so a step costs about k/2 of the ELBO's

    def loss(
        self,
        model: Architecture,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        epochs_done: float,
        generator: torch.Generator,
    ) -> torch.Tensor:
        if not isinstance(model, ConvVAE):
            raise TypeError(f"{self.name} trains a ConvVAE, got {type(model).__name__}")
        weight = self.kl_weight(epochs_done)
        return importance_weighted_bound(model, inputs, targets, self.samples, generator, weight).mean()
