"""How far a batch of latent codes is from the prior N(0, I): a maximum mean discrepancy (MMD).

The ELBO asks each posterior q(z|x, y) to stay near the prior, but not that the codes of one label, taken
together, fill the prior: the digits of a label can gather in a corner of the latent space, and samples
z ~ N(0, I) of that label then fall where its decoder never learnt to draw it. InfoVAE (Zhao et al., 2017)
and the Wasserstein autoencoder (Tolstikhin et al., 2018) add the MMD between the codes and prior draws to
the loss; here it is taken label by label (models.training.objectives.LabelledElbo's `class_mmd_weight`).
The kernel is the inverse multiquadratic k(a, b) = C / (C + |a - b|^2), C = 2 D, the WAE's choice: its heavy
tails still pull codes that are far from the prior.
"""

from __future__ import annotations

import torch


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, D), (M, D) -> (N, M) squared Euclidean distances (no square root: its gradient at 0 is not finite)."""
    return (a.pow(2).sum(dim=1, keepdim=True) + b.pow(2).sum(dim=1) - 2 * a @ b.T).clamp(min=0)


def mmd_to_standard_normal(latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The unbiased estimate of MMD^2 between (N, D) codes (N >= 2) and N draws of N(0, I): a scalar."""
    count, size = latents.shape
    prior = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    scale = 2.0 * size

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return scale / (scale + squared_distances(a, b))

    off_diagonal = ~torch.eye(count, dtype=torch.bool, device=latents.device)
    within = kernel(latents, latents)[off_diagonal].mean() + kernel(prior, prior)[off_diagonal].mean()
    return within - 2 * kernel(latents, prior).mean()


def per_label_mmd(
    latents: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The mean over the labels present (at least two codes each) of the MMD^2 between their codes and N(0, I)."""
    terms = [
        mmd_to_standard_normal(latents[labels == label], generator)
        for label in labels.unique().tolist()
        if int((labels == label).sum()) >= 2
    ]
    return torch.stack(terms).mean() if terms else latents.new_zeros(())
