"""Embeddings and reconstructions against PCA with the same number of dimensions.

embed: digit accuracy of a k-nearest-neighbour vote and of a linear probe, both trained on a seeded
index of training digits and scored on the test set. reconstruct: MSE, PSNR and SSIM on the test set.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from models.checkpoint import Checkpoint
from models.evaluation.context import EvaluationContext, embedding_size, model_method, quality
from models.quality.metrics import mse, psnr_from_mse

DIGITS = 10
# The issue sets the k-NN target for the embedding model; other models' embeddings are compared, not judged.
KNN_TARGET_MODELS = frozenset({"mnist-ae"})


def knn_accuracy(
    index: torch.Tensor, index_labels: torch.Tensor, queries: torch.Tensor, query_labels: torch.Tensor, k: int
) -> float:
    """Accuracy of a k-NN majority vote under Euclidean distance; ties go to the nearer neighbours.

    index: (M, D), queries: (Q, D), labels: (M,), (Q,).
    """
    correct = 0
    # Rank weights just below 1 break ties in favour of closer neighbours without outvoting anyone.
    rank_weights = 1.0 - torch.arange(k, dtype=torch.float64) * 1e-3  # (k,)
    for start in range(0, queries.shape[0], 1000):
        chunk = queries[start : start + 1000].double()
        distances = torch.cdist(chunk, index.double())  # (q, M)
        nearest = distances.topk(k, dim=1, largest=False).indices  # (q, k), nearest first
        votes = F.one_hot(index_labels[nearest], DIGITS).double() * rank_weights.view(1, k, 1)  # (q, k, 10)
        predictions = votes.sum(dim=1).argmax(dim=1)
        correct += int((predictions == query_labels[start : start + 1000]).sum())
    return correct / queries.shape[0]


def linear_probe_accuracy(
    train: torch.Tensor,
    train_labels: torch.Tensor,
    test: torch.Tensor,
    test_labels: torch.Tensor,
    iterations: int,
    weight_decay: float,
) -> float:
    """Test accuracy of multinomial logistic regression on standardised features.

    Features are standardised with the training mean and std; the weights are fitted full-batch with
    L-BFGS (strong Wolfe line search) on cross-entropy + weight_decay * ||W||^2 (bias not penalised).
    """
    mean, std = train.mean(dim=0), train.std(dim=0).clamp_min(1e-6)
    train_features = ((train - mean) / std).double()  # (M, D)
    test_features = ((test - mean) / std).double()  # (Q, D)
    weights = torch.zeros(train.shape[1], DIGITS, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(DIGITS, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weights, bias], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(train_features @ weights + bias, train_labels) + weight_decay * weights.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(objective)
    with torch.no_grad():
        predictions = (test_features @ weights + bias).argmax(dim=1)
    return float((predictions == test_labels).double().mean())


def _index(context: EvaluationContext) -> tuple[torch.Tensor, torch.Tensor]:
    settings = context.settings
    indices = context.seeded_subset(len(context.train.images), settings.index_size, settings.index_seed)
    return context.train.images[indices], context.train.labels[indices]


def _classification_scores(
    context: EvaluationContext, index_codes: torch.Tensor, test_codes: torch.Tensor
) -> dict[str, float]:
    settings = context.settings
    _, index_labels = _index(context)
    test_labels = context.test.labels
    knn = knn_accuracy(index_codes, index_labels, test_codes, test_labels, settings.knn_neighbours)
    probe = linear_probe_accuracy(
        index_codes, index_labels, test_codes, test_labels, settings.probe_iterations, settings.probe_weight_decay
    )
    return {"knn_accuracy": round(knn, 4), "linear_probe_accuracy": round(probe, 4)}


def evaluate_embedding(checkpoint: Checkpoint, context: EvaluationContext) -> dict[str, Any]:
    settings = context.settings
    embed = model_method(checkpoint, "embed")
    dimensions = embedding_size(checkpoint)
    index_images, _ = _index(context)
    pca = context.pca(dimensions)
    baseline = f"pca-{pca.dimensions}"

    def pca_scores() -> dict[str, float]:
        return _classification_scores(context, pca.embed(index_images), pca.embed(context.test.images))

    scores = {
        "model": _classification_scores(
            context, context.batched(embed, index_images), context.batched(embed, context.test.images)
        ),
        baseline: context.cached(f"{baseline}-classification", pca_scores),
    }
    result: dict[str, Any] = {
        "protocol": (
            f"{dimensions}-D embeddings; index: {len(index_images)} training digits chosen by seed "
            f"{settings.index_seed}; queries: the {len(context.test.images)} test digits; "
            f"{settings.knn_neighbours}-NN majority vote (Euclidean, ties to the nearer); linear probe: multinomial "
            f"logistic regression on standardised features, full-batch L-BFGS ({settings.probe_iterations} "
            f"iterations, L2 {settings.probe_weight_decay}); PCA fitted on all {len(context.train.images)} "
            "training digits"
        ),
        "dimensions": dimensions,
        "scores": scores,
    }
    if checkpoint.card.name in KNN_TARGET_MODELS:
        margin = scores["model"]["knn_accuracy"] - scores[baseline]["knn_accuracy"]
        result["target"] = {
            "description": f"{settings.knn_neighbours}-NN accuracy >= PCA's at the same size ({pca.dimensions})",
            "best_baseline": baseline,
            "margin": round(margin, 4),
            "met": bool(margin >= 0),
        }
    return result


def _reconstruction_scores(reconstructions: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    mean_squared_error = mse(reconstructions, clean).mean().item()
    return {
        "mse": round(mean_squared_error, 6),
        "psnr_of_mean_mse": round(psnr_from_mse(mean_squared_error), 3),
        **quality(reconstructions, clean),
    }


def evaluate_reconstruction(checkpoint: Checkpoint, context: EvaluationContext) -> dict[str, Any]:
    reconstruct = model_method(checkpoint, "reconstruct")
    dimensions = embedding_size(checkpoint)
    clean = context.test.images
    scores = {"model": _reconstruction_scores(context.batched(reconstruct, clean), clean)}
    pixels = int(clean[0].numel())
    if dimensions < pixels:
        baseline = f"pca-{dimensions}"
        pca = context.pca(dimensions)
        scores[baseline] = context.cached(
            f"{baseline}-reconstruction", lambda: _reconstruction_scores(pca.reconstruct(clean), clean)
        )
        comparison = (
            f"PCA with {dimensions} components fitted on all {len(context.train.images)} training digits, "
            "output clipped to [0, 1]"
        )
    else:
        comparison = f"no PCA baseline: a {dimensions}-number code is not smaller than the {pixels} pixels"
    return {
        "protocol": (
            f"MNIST test set ({len(clean)} digits) reconstructed through a {dimensions}-D code; {comparison}; "
            "mse, psnr and ssim are means over images, psnr_of_mean_mse is 10 log10(1 / mean mse)"
        ),
        "dimensions": dimensions,
        "images": len(clean),
        "scores": scores,
    }
