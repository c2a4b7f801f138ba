"""The importance-sampled bounds keep their published numbers for the standard-normal prior."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from models.architectures import ConvVAE, ConvVAEConfig
from models.architectures.vae import kl_divergence
from models.evaluation.mnist.vae import importance_sampled_bounds


def bounds_before_the_prior_was_a_parameter(
    model: ConvVAE, binary: torch.Tensor, samples: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """models.evaluation.mnist.vae.importance_sampled_bounds as every row of docs/vae-levers.json was measured."""

    def log_normal(values: torch.Tensor, mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
        return -0.5 * (math.log(2 * math.pi) + log_variance + (values - mean).pow(2) / log_variance.exp()).sum(dim=-1)

    batch = binary.shape[0]
    mean, log_variance = model.encode(binary)
    noise = torch.randn((samples, *mean.shape), generator=generator, dtype=mean.dtype).to(mean.device)
    latents = mean + (0.5 * log_variance).exp() * noise
    logits = model.decode_logits(latents.reshape(samples * batch, -1))
    targets = binary.unsqueeze(0).expand(samples, *binary.shape).reshape_as(logits)
    log_likelihood = -F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).sum(dim=1)
    log_likelihood = log_likelihood.view(samples, batch)
    log_prior = log_normal(latents, torch.zeros_like(latents), torch.zeros_like(latents))
    log_posterior = log_normal(latents, mean, log_variance)
    log_weights = log_likelihood + log_prior - log_posterior
    nll = -(torch.logsumexp(log_weights, dim=0) - math.log(samples))
    kl = kl_divergence(mean, log_variance)
    negative_elbo = kl - log_likelihood.mean(dim=0)
    return negative_elbo, nll, kl


def test_the_standard_normal_prior_gives_exactly_the_numbers_of_before() -> None:
    torch.manual_seed(0)
    model = ConvVAE(ConvVAEConfig(latent_size=3, widths=(2, 2), hidden_size=8)).eval()
    binary = torch.bernoulli(torch.full((5, 1, 28, 28), 0.3), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = bounds_before_the_prior_was_a_parameter(model, binary, 30, torch.Generator().manual_seed(2))
        now = importance_sampled_bounds(model, binary, 30, torch.Generator().manual_seed(2))
        assert all(torch.equal(a, b) for a, b in zip(before, now, strict=True))
        # A standard-normal log-prior passed in gives the same NLL (the KL is then sampled, not analytic).
        standard = importance_sampled_bounds(
            model,
            binary,
            30,
            torch.Generator().manual_seed(2),
            lambda z: -0.5 * (math.log(2 * math.pi) + z.pow(2)).sum(dim=-1),
        )
        assert torch.allclose(standard[1], before[1], atol=1e-4)
