"""The quick hold-out figures the training log prints: PSNR, k-NN, PCA and the importance-sampled NLL."""

from __future__ import annotations

import math

import torch

from models.architectures import ConvVAE, ConvVAEConfig
from models.training.validation import importance_sampled_nll, knn_accuracy, pca_projection, psnr


def test_psnr_of_a_known_error() -> None:
    target = torch.zeros(2, 1, 4, 4)
    output = target.clone()
    output[0] += 0.1  # mse 0.01 -> 20 dB
    output[1] += 0.01  # mse 1e-4 -> 40 dB
    assert torch.allclose(psnr(output, target), torch.tensor([20.0, 40.0], dtype=torch.float64), atol=1e-4)


def test_knn_votes_with_the_nearest_neighbours() -> None:
    index = torch.tensor([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    queries = torch.tensor([[0.05], [9.9], [5.3]])
    assert knn_accuracy(index, labels, queries, torch.tensor([0, 1, 1]), k=3) == 1.0
    assert knn_accuracy(index, labels, queries, torch.tensor([1, 0, 0]), k=3) == 0.0


def test_pca_keeps_the_direction_of_largest_variance() -> None:
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(500, 3, generator=generator) * torch.tensor([5.0, 1.0, 0.1])
    projected, _ = pca_projection(points, points[:2], size=1)
    assert abs(float(projected.std()) - float(points[:, 0].std())) < 0.05


def test_importance_sampled_nll_matches_numerical_integration() -> None:
    # With a 1-d latent, log p(x) = log ∫ p(x|z) N(z; 0, 1) dz can be computed on a grid.
    torch.manual_seed(0)
    model = ConvVAE(ConvVAEConfig(latent_size=1, widths=(2, 2), hidden_size=4)).eval()
    x = torch.bernoulli(torch.full((2, 1, 28, 28), 0.3), generator=torch.Generator().manual_seed(1))
    grid = torch.linspace(-8, 8, 4001).unsqueeze(1)  # (G, 1)
    with torch.no_grad():
        logits = model.decode_logits(grid)  # (G, 1, 28, 28)
        exact = []
        for image in x:
            log_likelihood = (
                -torch.nn.functional.binary_cross_entropy_with_logits(logits, image.expand_as(logits), reduction="none")
                .flatten(1)
                .sum(1)
            )
            log_prior = -0.5 * (grid[:, 0] ** 2 + math.log(2 * math.pi))
            log_integrand = log_likelihood + log_prior
            spacing = float(grid[1, 0] - grid[0, 0])
            exact.append(-(torch.logsumexp(log_integrand, 0) + math.log(spacing)))
    estimate = importance_sampled_nll(model, x, samples=5000, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(estimate, torch.stack(exact), atol=0.05)


def test_importance_sampling_is_tighter_than_the_elbo() -> None:
    torch.manual_seed(0)
    model = ConvVAE(ConvVAEConfig(latent_size=4, widths=(2, 2), hidden_size=8)).eval()
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.2), generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        neg_elbo = torch.stack([model.loss(x, generator=generator)[0] for _ in range(50)]).mean(0)
    nll = importance_sampled_nll(model, x, samples=200, generator=generator)
    assert (nll <= neg_elbo + 1e-3).all()
