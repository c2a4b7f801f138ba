"""Quick figures on the validation hold-out, printed in the training log and kept in the model card.

These are for the trainer's eyes (did this run reach its target?); the real measurements are taken
on the MNIST test set by `models.evaluate`. One check per task, looked up by task name. Labels are
only used here, to score embeddings, never in training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from models.architectures import Architecture, ConvVAE, SuperResolutionAE
from models.data.corruptions import downscale, gaussian_noise, upscale
from models.quality.metrics import psnr  # peak 1.0, per image

BATCH = 500


@dataclass
class ValidationData:
    images: torch.Tensor  # (N, 1, 28, 28) hold-out digits
    labels: torch.Tensor  # (N,)
    index_images: torch.Tensor  # (M, 1, 28, 28) training digits that k-NN queries are matched against
    index_labels: torch.Tensor  # (M,)
    seed: int = 0


@torch.no_grad()
def _apply(
    function: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """Run `function` over `images` in batches on `device`; results come back on the CPU."""
    return torch.cat([function(images[i : i + BATCH].to(device)).cpu() for i in range(0, len(images), BATCH)])


def _method(model: Architecture, task: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's method for a task (e.g. `model.denoise`); every architecture names them after the tasks."""
    method: Callable[[torch.Tensor], torch.Tensor] = getattr(model, task)
    return method


def check_reconstruct(model: Architecture, data: ValidationData, device: torch.device) -> dict[str, float]:
    outputs = _apply(_method(model, "reconstruct"), data.images, device)
    return {"reconstruct_psnr_db": float(psnr(outputs, data.images).mean())}


def check_denoise(model: Architecture, data: ValidationData, device: torch.device) -> dict[str, float]:
    figures: dict[str, float] = {}
    for sigma in (0.25, 0.5):
        noisy = gaussian_noise(data.images, sigma, clip=True, seed=data.seed)
        denoised = _apply(_method(model, "denoise"), noisy, device)
        figures[f"denoise_psnr_db_sigma_{sigma}"] = float(psnr(denoised, data.images).mean())
        figures[f"noisy_psnr_db_sigma_{sigma}"] = float(psnr(noisy, data.images).mean())
    return figures


def check_super_resolve(model: Architecture, data: ValidationData, device: torch.device) -> dict[str, float]:
    if not isinstance(model, SuperResolutionAE):
        raise TypeError(f"the super-resolve check needs a SuperResolutionAE, got {type(model).__name__}")
    scale = model.scale
    small = downscale(data.images, scale, "area")
    outputs = _apply(_method(model, "super_resolve"), small, device)
    bicubic = upscale(small, scale, "bicubic")
    return {
        f"super_resolve_psnr_db_x{scale}": float(psnr(outputs, data.images).mean()),
        f"bicubic_psnr_db_x{scale}": float(psnr(bicubic, data.images).mean()),
    }


def knn_accuracy(
    index: torch.Tensor, index_labels: torch.Tensor, queries: torch.Tensor, query_labels: torch.Tensor, k: int = 5
) -> float:
    """Share of queries whose k nearest index vectors (Euclidean) vote for the right label."""
    correct = 0
    for start in range(0, len(queries), BATCH):
        distances = torch.cdist(queries[start : start + BATCH], index)  # (b, M)
        nearest = distances.topk(k, largest=False).indices  # (b, k)
        votes = torch.mode(index_labels[nearest], dim=1).values
        correct += int((votes == query_labels[start : start + BATCH]).sum())
    return correct / len(queries)


def pca_projection(index: torch.Tensor, queries: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Project flattened images onto the top `size` principal components of `index`."""
    flat_index, flat_queries = index.flatten(1).double(), queries.flatten(1).double()
    centre = flat_index.mean(dim=0)
    covariance = (flat_index - centre).T @ (flat_index - centre) / len(flat_index)
    _, vectors = torch.linalg.eigh(covariance)  # ascending eigenvalues
    components = vectors[:, -size:]
    return ((flat_index - centre) @ components).float(), ((flat_queries - centre) @ components).float()


def check_embed(model: Architecture, data: ValidationData, device: torch.device) -> dict[str, float]:
    index = _apply(_method(model, "embed"), data.index_images, device)
    queries = _apply(_method(model, "embed"), data.images, device)
    size = index.shape[1]
    pca_index, pca_queries = pca_projection(data.index_images, data.images, size)
    return {
        "embed_knn5_accuracy": knn_accuracy(index, data.index_labels, queries, data.labels),
        f"pca{size}_knn5_accuracy": knn_accuracy(pca_index, data.index_labels, pca_queries, data.labels),
        "knn_index_size": float(len(index)),
    }


@torch.no_grad()
def importance_sampled_nll(
    model: ConvVAE, binary: torch.Tensor, samples: int, generator: torch.Generator, chunk: int = 50
) -> torch.Tensor:
    """-log p(x) in nats per image, estimated with `samples` draws from q(z|x): (B, 1, 28, 28) -> (B,).

    log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K.
    """
    results = []
    for start in range(0, len(binary), chunk):
        x = binary[start : start + chunk]  # (b, 1, 28, 28)
        mean, log_variance = model.encode(x)  # (b, D)
        noise = torch.randn((samples, *mean.shape), generator=generator, device=x.device)  # (K, b, D)
        latents = mean + (0.5 * log_variance).exp() * noise  # (K, b, D)
        logits = model.decode_logits(latents.flatten(0, 1))  # (K*b, 1, 28, 28)
        targets = x.expand(samples, *x.shape).flatten(0, 1)
        log_likelihood = -F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).sum(1)
        log_prior = -0.5 * (latents.pow(2) + math.log(2 * math.pi)).sum(-1)  # (K, b)
        log_posterior = -0.5 * (noise.pow(2) + log_variance + math.log(2 * math.pi)).sum(-1)  # (K, b)
        log_weights = log_likelihood.view(samples, -1) + log_prior - log_posterior
        results.append(-(torch.logsumexp(log_weights, dim=0) - math.log(samples)).cpu())
    return torch.cat(results)


def check_vae(model: Architecture, data: ValidationData, device: torch.device, images: int = 1000) -> dict[str, float]:
    if not isinstance(model, ConvVAE):
        raise TypeError(f"the vae check needs a ConvVAE, got {type(model).__name__}")
    binary_generator = torch.Generator().manual_seed(data.seed)
    binary = torch.bernoulli(data.images[:images], generator=binary_generator).to(device)
    generator = torch.Generator(device=device).manual_seed(data.seed)
    with torch.no_grad():
        neg_elbo = torch.cat(
            [model.loss(binary[i : i + BATCH], generator=generator)[0] for i in range(0, len(binary), BATCH)]
        )
    nll = importance_sampled_nll(model, binary, samples=200, generator=generator)
    return {
        "vae_images": float(len(binary)),
        "vae_negative_elbo_nats": float(neg_elbo.mean()),
        "vae_is_nll_nats_200_samples": float(nll.mean()),
    }


CHECKS: dict[str, Callable[[Architecture, ValidationData, torch.device], dict[str, float]]] = {
    "reconstruct": check_reconstruct,
    "denoise": check_denoise,
    "super-resolve": check_super_resolve,
    "embed": check_embed,
    "vae": check_vae,
}


def run_checks(
    tasks: tuple[str, ...], model: Architecture, data: ValidationData, device: torch.device
) -> dict[str, float]:
    """Every check that applies to the model's tasks, merged into one flat dict of figures."""
    model.eval()
    figures: dict[str, float] = {}
    for task in tasks:
        figures.update(CHECKS[task](model, data, device))
    return {key: round(value, 4) for key, value in figures.items()}
