"""How good generated digits are, judged by the project's own digit classifier (checkpoints/mnist-classifier).

- Label accuracy: the share of a conditional VAE's samples that the classifier reads as the label asked for.
- Fréchet distance: between Gaussians fitted to the classifier's penultimate features (128-d) of 10,000
  generated digits and of the 10,000 test digits, d = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)),
  the FID recipe with an MNIST classifier in place of Inception. Lower is better; only figures taken with
  the same classifier compare. References put the scale in place: 10,000 training digits (real digits,
  another sample: the floor) and the test digits blurred by a Gaussian of sigma 1 pixel (slightly wrong).
Samples are decoder means (pixel probabilities), what the service returns, drawn with z ~ N(0, I), seed 0.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from models.architectures import ConditionalConvVAE, ConvVAE, DigitClassifier
from models.checkpoint import CARD_FILE, Checkpoint, load_checkpoint
from models.evaluation.context import EvaluationContext
from models.evaluation.mnist.figures import save_image_grid

CLASSIFIER = "mnist-classifier"  # the judge, a sibling checkpoint folder
UNCONDITIONAL_VAES = ("mnist-vae", "mnist-vae-2d")  # measured beside the conditional model, when present
SAMPLES = 10_000
BLUR_SIGMA = 1.0  # pixels
LABEL_ACCURACY_TARGET = 0.97
CLASSIFIER_ACCURACY_TARGET = 0.99


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature vectors (N, F) and (M, F).

    tr((S_a S_b)^(1/2)) is the sum of the square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2), which
    is symmetric: two symmetric eigendecompositions in float64, no general matrix square root.
    """
    a, b = features_a.double(), features_b.double()
    mean_a, mean_b = a.mean(dim=0), b.mean(dim=0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    product = root_a @ cov_b @ root_a
    trace_root = torch.linalg.eigvalsh((product + product.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mean_a - mean_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * trace_root
    return float(distance)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, C, H, W) blurred by a separable Gaussian of `sigma` pixels (radius 3 sigma, zero padding)."""
    radius = max(1, round(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    blurred = F.conv2d(images, horizontal, padding=(0, radius), groups=channels)
    return F.conv2d(blurred, vertical, padding=(radius, 0), groups=channels)


def load_classifier(checkpoints_dir: Path, device: torch.device) -> DigitClassifier:
    directory = Path(checkpoints_dir) / CLASSIFIER
    if not (directory / CARD_FILE).is_file():
        raise FileNotFoundError(f"sample quality needs the classifier {directory}: train it with "
                                f"`python -m models.train {CLASSIFIER} --data-dir MNIST_DIR`")  # fmt: skip
    model = load_checkpoint(directory, device).model
    if not isinstance(model, DigitClassifier):
        raise TypeError(f"{directory} is a {type(model).__name__}, not a DigitClassifier")
    return model.eval()


@torch.no_grad()
def judge(classifier: DigitClassifier, images: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """-> penultimate features (N, F) and predicted labels (N,), on the CPU."""
    device = next(classifier.parameters()).device
    features, predictions = [], []
    for start in range(0, len(images), batch):
        chunk = classifier.features(images[start : start + batch].to(device))
        features.append(chunk.cpu())
        predictions.append(classifier.head(chunk).argmax(dim=1).cpu())
    return torch.cat(features), torch.cat(predictions)


@torch.no_grad()
def in_batches(make: Callable[[int, int], torch.Tensor], count: int, batch: int = 500) -> torch.Tensor:
    return torch.cat([make(start, min(count, start + batch)).cpu() for start in range(0, count, batch)])


@torch.no_grad()
def unconditional_samples(model: ConvVAE, count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn((count, model.latent_size), generator=generator)
    device = next(model.parameters()).device
    return in_batches(lambda start, end: model.decode(latents[start:end].to(device)), count)


@torch.no_grad()
def conditional_samples(model: ConditionalConvVAE, labels: torch.Tensor, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn((len(labels), model.latent_size), generator=generator)
    device = next(model.parameters()).device
    return in_batches(
        lambda start, end: model.decode_given(latents[start:end].to(device), labels[start:end].to(device)), len(labels)
    )


def reference_distances(context: EvaluationContext, classifier: DigitClassifier) -> dict[str, float]:
    """The Fréchet distances of real digits to the test set: training digits, and blurred test digits."""
    test_features = context.cached("classifier-test-features", lambda: judge(classifier, context.test.images)[0])
    train_subset = context.seeded_subset(len(context.train.images), SAMPLES, context.settings.subset_seed)
    train_features = judge(classifier, context.train.images[train_subset])[0]
    blurred_features = judge(classifier, gaussian_blur(context.test.images, BLUR_SIGMA))[0]
    return {
        "train_vs_test": round(frechet_distance(train_features, test_features), 3),
        f"blurred_test_sigma{BLUR_SIGMA:g}_vs_test": round(frechet_distance(blurred_features, test_features), 3),
    }


def draw_conditional_figures(model: ConditionalConvVAE, context: EvaluationContext, name: str) -> dict[str, str]:
    """samples: one row per label (10 draws each, seed 0); restyle: the first test digit of every class
    (first column) drawn as 0..9 in its handwriting."""
    figures_dir = context.figures_dir
    figures_dir.mkdir(parents=True, exist_ok=True)
    classes = model.classes
    labels = torch.arange(classes).repeat_interleave(10)
    grid = conditional_samples(model, labels, context.settings.sampling_seed)
    test = context.test
    firsts = torch.tensor([int((test.labels == label).nonzero()[0, 0]) for label in range(classes)])
    sources = test.images[firsts]  # (classes, 1, 28, 28)
    rows = []
    with torch.no_grad():
        mean, _ = model.encode_given(sources, test.labels[firsts])
        for row in range(classes):
            restyled = model.decode_given(mean[row].expand(classes, -1), torch.arange(classes))
            rows.append(torch.cat([sources[row : row + 1], restyled]))
    return {
        "samples": str(save_image_grid(grid, 10, figures_dir / f"{name}-samples.png")),
        "restyle": str(save_image_grid(torch.cat(rows), classes + 1, figures_dir / f"{name}-restyle.png")),
    }


def evaluate_conditional_vae(checkpoint: Checkpoint, context: EvaluationContext) -> dict[str, Any]:
    model = checkpoint.model
    if not isinstance(model, ConditionalConvVAE):
        raise TypeError(
            f"{checkpoint.card.name}: conditional-vae needs a ConditionalConvVAE, got {type(model).__name__}"
        )
    model.eval()
    classifier = load_classifier(checkpoint.directory.parent, context.device)
    seed = context.settings.sampling_seed
    labels = torch.arange(model.classes).repeat_interleave(SAMPLES // model.classes)
    samples = conditional_samples(model, labels, seed)
    features, predictions = judge(classifier, samples)
    test_features = context.cached("classifier-test-features", lambda: judge(classifier, context.test.images)[0])
    correct = predictions == labels
    per_label = {str(label): round(float(correct[labels == label].float().mean()), 4) for label in range(model.classes)}
    distances = {checkpoint.card.name: round(frechet_distance(features, test_features), 3)}
    for name in UNCONDITIONAL_VAES:
        directory = checkpoint.directory.parent / name
        if (directory / CARD_FILE).is_file():
            other = load_checkpoint(directory, context.device).model
            if isinstance(other, ConvVAE):
                other_features = judge(classifier, unconditional_samples(other.eval(), SAMPLES, seed))[0]
                distances[name] = round(frechet_distance(other_features, test_features), 3)
    references = reference_distances(context, classifier)
    label_accuracy = float(correct.float().mean())
    targets = [
        {
            "description": f"conditional samples classified as the requested label >= {LABEL_ACCURACY_TARGET:.0%}",
            "measured": f"{label_accuracy:.2%}",
            "met": label_accuracy >= LABEL_ACCURACY_TARGET,
        }
    ]
    unconditional = [distances[name] for name in UNCONDITIONAL_VAES if name in distances]
    if unconditional:
        best = min(unconditional)
        targets.append(
            {
                "description": "Fréchet distance of conditional samples below the unconditional VAEs'",
                "measured": f"{distances[checkpoint.card.name]:.2f} vs {best:.2f}",
                "met": distances[checkpoint.card.name] < best,
            }
        )
    return {
        "protocol": f"{SAMPLES} samples ({SAMPLES // model.classes} per label; unconditional VAEs: z ~ N(0, I)), "
        f"decoder means, seed {seed}, judged by {CLASSIFIER} (penultimate 128-d features; Fréchet distance to the "
        "10,000 MNIST test digits)",
        "classifier": CLASSIFIER,
        "classifier_sha256": load_checkpoint(checkpoint.directory.parent / CLASSIFIER).card.weights_sha256,
        "label_accuracy": round(label_accuracy, 4),
        "label_accuracy_per_label": per_label,
        "frechet_distance": distances,
        "frechet_distance_references": references,
        "targets": targets,
        "figures": draw_conditional_figures(model, context, checkpoint.card.name),
    }


def evaluate_classification(checkpoint: Checkpoint, context: EvaluationContext) -> dict[str, Any]:
    model = checkpoint.model
    if not isinstance(model, DigitClassifier):
        raise TypeError(f"{checkpoint.card.name}: classify needs a DigitClassifier, got {type(model).__name__}")
    model.eval()
    _, predictions = judge(model, context.test.images)
    accuracy = float((predictions == context.test.labels).float().mean())
    blurred = float(
        (judge(model, gaussian_blur(context.test.images, BLUR_SIGMA))[1] == context.test.labels).float().mean()
    )
    return {
        "protocol": "the 10,000 MNIST test digits (never seen in training or model selection)",
        "test_accuracy": round(accuracy, 4),
        "test_errors": int((predictions != context.test.labels).sum()),
        f"blurred_sigma{BLUR_SIGMA:g}_test_accuracy": round(blurred, 4),
        "targets": [
            {
                "description": f"test accuracy >= {CLASSIFIER_ACCURACY_TARGET:.0%}",
                "measured": f"{accuracy:.2%}",
                "met": accuracy >= CLASSIFIER_ACCURACY_TARGET,
            }
        ],
    }
