"""What every task's evaluation shares: the protocol's settings, the data and cached baselines."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import torch

from models.checkpoint import Checkpoint
from models.data.mnist import MnistSplit, load_mnist
from models.quality.baselines import PCA
from models.quality.metrics import psnr, ssim


@dataclass(frozen=True)
class EvaluationSettings:
    """The measurement protocol. The defaults are the documented one; tests shrink the sizes."""

    # denoise: zero-mean Gaussian noise clipped to [0, 1]; one standard-normal draw (seed) scaled by each sigma
    noise_sigmas: tuple[float, ...] = (0.25, 0.5)
    noise_seed: int = 0
    bm3d_subset_size: int = 500  # BM3D is slow: a seeded subset of test digits
    bm3d_workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # processes (same result for any count)
    subset_seed: int = 0
    blur_sigma_candidates: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
    blur_tuning_images: int = 1000  # training images (not test) that choose the blur's sigma
    blur_tuning_seed: int = 1
    # embed: k-NN and a linear probe trained on a seeded index of training images
    knn_neighbours: int = 5
    index_size: int = 20_000
    index_seed: int = 0
    probe_iterations: int = 100  # full-batch L-BFGS steps
    probe_weight_decay: float = 1e-4
    # vae: binarised test digits, importance sampling
    importance_samples: int = 200
    binarise_seed: int = 0
    sampling_seed: int = 0
    vae_images: int | None = None  # None: the whole test set
    vae_chunk_images: int = 50  # images per importance-sampling batch (x K decoder passes)
    manifold_grid: int = 20  # the 2-D latent map is manifold_grid x manifold_grid decoded digits
    batch_size: int = 500  # images per model call
    # natural images (models.evaluation.photo.natural): AWGN seed, and BM3D on the first N images of each set
    natural_noise_seed: int = 0
    natural_bm3d_images: int | None = 10  # None: every image (minutes per set and sigma on 2 cores)
    # photo denoisers of every noise level (models.evaluation.photo.denoise): BM3D costs ~10 s per gray and
    # ~30 s per colour 481x321 image here, so it runs on the first images of the first set at some sigmas
    photo_sigmas_gray: tuple[int, ...] = (15, 25, 50, 75)
    photo_sigmas_colour: tuple[int, ...] = (15, 25, 50)  # a colour model costs ~1.7x per pixel
    photo_images_per_set: int | None = None  # None: every image
    photo_baseline_images_gray: int = 6
    photo_baseline_sigmas_gray: tuple[int, ...] = (15, 25, 50)
    photo_baseline_images_colour: int = 3
    photo_baseline_sigmas_colour: tuple[int, ...] = (25,)
    photo_speed_baseline: bool = True  # BM3D once on the 512x512 speed image (tens of seconds)
    photo_estimator_images_colour: int | None = 24  # the estimator reads every channel: ~1 s a colour image


@dataclass
class EvaluationContext:
    """Data, settings and cached results shared by the evaluations of one run."""

    data_dir: Path
    figures_dir: Path
    settings: EvaluationSettings = field(default_factory=EvaluationSettings)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    verify_data: bool = True
    # The folder holding BSD68/, Set12/, Set5/ and Set14/; None: the parent of data_dir (the MNIST folder).
    natural_dir: Path | None = None
    # Results that do not depend on the model (noisy images, baseline scores, PCA fits), keyed by name.
    cache: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def test(self) -> MnistSplit:
        return load_mnist(self.data_dir, "test", verify=self.verify_data)

    @cached_property
    def train(self) -> MnistSplit:
        return load_mnist(self.data_dir, "train", verify=self.verify_data)

    @property
    def natural_data_dir(self) -> Path:
        return self.natural_dir if self.natural_dir is not None else Path(self.data_dir).parent

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    def seeded_subset(self, population: int, size: int, seed: int) -> torch.Tensor:
        """The first `size` indices of a seeded permutation of range(population), sorted: (size,)."""
        generator = torch.Generator().manual_seed(seed)
        return torch.randperm(population, generator=generator)[: min(size, population)].sort().values

    def pca(self, dimensions: int) -> PCA:
        """PCA fitted on all training images (cached per size), with `dimensions` components or, for a
        code larger than the image, all of them (then it reconstructs losslessly)."""
        pixels = int(self.train.images[0].numel())
        size = min(dimensions, pixels)
        return self.cached(f"pca-{size}", lambda: PCA.fit(self.train.images, size))

    def batched(self, function: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        """Apply a model method batch by batch on the context's device; results on the CPU."""
        with torch.no_grad():
            outputs = [function(batch.to(self.device)).cpu() for batch in _batches(images, self.settings.batch_size)]
        return torch.cat(outputs)


def quality(images: torch.Tensor, references: torch.Tensor) -> dict[str, float]:
    """Mean per-image PSNR (dB) and SSIM of `images` against `references`, rounded for the card."""
    return {
        "psnr": round(psnr(images, references).mean().item(), 3),
        "ssim": round(ssim(images, references).mean().item(), 4),
    }


def model_method(checkpoint: Checkpoint, method: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's `method` (e.g. 'denoise'), or a TypeError naming the checkpoint if it has none."""
    function = getattr(checkpoint.model, method, None)
    if not callable(function):
        raise TypeError(f"{checkpoint.card.name}: architecture {checkpoint.card.architecture!r} has no {method}()")
    return cast(Callable[[torch.Tensor], torch.Tensor], function)


def embedding_size(checkpoint: Checkpoint) -> int:
    size = getattr(checkpoint.model, "embedding_size", None)
    if not isinstance(size, int):
        raise TypeError(f"{checkpoint.card.name}: architecture {checkpoint.card.architecture!r} has no embedding_size")
    return size


def _batches(images: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for start in range(0, images.shape[0], size):
        yield images[start : start + size]
