"""The VAE's KL term against an independent Monte-Carlo estimate and the log-variance convention."""

from __future__ import annotations

import math

import torch

from models.architectures.vae import kl_divergence


def test_kl_is_zero_for_the_prior_and_positive_otherwise() -> None:
    zeros = torch.zeros(2, 4)
    assert torch.allclose(kl_divergence(zeros, zeros), torch.zeros(2))
    assert (kl_divergence(torch.randn(5, 4), torch.randn(5, 4)) > 0).all()


def test_kl_matches_a_one_dimensional_closed_form_written_with_sigma() -> None:
    # KL(N(mu, s^2) || N(0, 1)) = log(1/s) + (s^2 + mu^2) / 2 - 1/2, written independently with s (not log s^2).
    mu, s = 0.7, 0.3
    expected = math.log(1 / s) + (s**2 + mu**2) / 2 - 0.5
    actual = kl_divergence(torch.tensor([[mu]]), torch.tensor([[math.log(s**2)]]))
    assert abs(float(actual) - expected) < 1e-6


def test_kl_matches_monte_carlo_estimate() -> None:
    generator = torch.Generator().manual_seed(0)
    mean = torch.tensor([[0.5, -1.0, 2.0]])
    log_variance = torch.tensor([[-1.0, 0.5, -2.0]])
    std = (0.5 * log_variance).exp()
    samples = mean + std * torch.randn(400_000, 3, generator=generator, dtype=torch.float64)  # z ~ q
    log_q = torch.distributions.Normal(mean.double(), std.double()).log_prob(samples).sum(1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(samples).sum(1)
    monte_carlo = float((log_q - log_p).mean())
    assert abs(float(kl_divergence(mean, log_variance)) - monte_carlo) < 0.02


def test_kl_sums_over_dimensions() -> None:
    mean, log_variance = torch.randn(3, 6), torch.randn(3, 6)
    per_dimension = torch.stack([kl_divergence(mean[:, i : i + 1], log_variance[:, i : i + 1]) for i in range(6)], 1)
    assert torch.allclose(kl_divergence(mean, log_variance), per_dimension.sum(1))
