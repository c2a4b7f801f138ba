"""The quality guard of reduced precision: what serving a model in bfloat16 or float16 costs, per task.

For every precision the device runs natively besides float32, the model's task outputs under that
precision (autocast, channels-last, batch norms folded: the service's execution plan, models.runtime.execution)
are scored against its eager float32 outputs on a fixed subset of the evaluation data:
- denoise, super-resolve, reconstruct: the PSNR change in dB (MNIST: mean per-image PSNR against the clean
  digits; photographs: the literature's protocol on the first images of BSD68 or Set5);
- embed: the 5-NN accuracy drop (index and queries both embedded in that precision) and the mean cosine
  similarity of the vectors to the float32 ones;
- vae: the rise of the importance-sampled negative log-likelihood in nats (same seeds in both runs);
and the speed of both precisions is measured in the same run. The result goes into the model card as
`serving.precision.<dtype>`, which `models.runtime.execution.guard_verdict` reads before the service uses it.
A few seconds to a minute per model on 2 CPU cores.
"""

from __future__ import annotations

import copy
import datetime
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from models.architectures.protocols import NoiseLevelDenoiser
from models.architectures.vae import ConvVAE
from models.checkpoint import Checkpoint
from models.data.corruptions import downscale, gaussian_noise
from models.data.natural_images import (
    awgn,
    bicubic_downscale,
    load_images,
    luminance,
    modcrop,
    noise_generator,
    psnr_255,
    psnr_y,
    quantise,
    to_tensor,
)
from models.evaluation.context import EvaluationContext
from models.evaluation.mnist.embedding import knn_accuracy
from models.evaluation.mnist.vae import importance_sampled_bounds
from models.quality.metrics import psnr
from models.runtime.execution import (
    REDUCED_PRECISIONS,
    TOLERANCES,
    ExecutionPlan,
    PlannedModel,
    guard_verdict,
)
from models.runtime.graph_transforms import apply_memory_format, fold_batch_norm
from models.runtime.machine import Precision, native_precisions


@dataclass(frozen=True)
class GuardSubset:
    """How much data the guard scores: bounded, so that it takes seconds to a minute per model."""

    mnist_images: int = 2000  # test digits (the first N of a seeded permutation)
    embedding_index: int = 5000  # training digits the 5-NN index holds
    vae_images: int = 200  # binarised test digits for the importance-sampled NLL
    vae_samples: int = 100  # importance samples per digit
    natural_images: int = 4  # the first photographs of BSD68 (denoise) or Set5 (super-resolve)
    seed: int = 0
    denoise_sigma: float = 0.5  # MNIST noise level (the evaluation's target sigma)
    speed_batch: int = 32  # MNIST images per timed call
    speed_tile: int = 256  # photographs: one (1, 1, tile, tile) window per timed call


def planned_copy(checkpoint: Checkpoint, device: torch.device, precision: Precision) -> PlannedModel:
    """A copy of the model as the service runs it in `precision`: batch norms folded, channels-last."""
    model = copy.deepcopy(checkpoint.model).to(device=device, dtype=torch.float32).eval()
    folded = fold_batch_norm(model)
    apply_memory_format(model, "channels_last")
    return PlannedModel(model, ExecutionPlan(str(device), precision, "channels_last", folded, False, 0))


def eager_float32(checkpoint: Checkpoint, device: torch.device) -> PlannedModel:
    """The reference: the model as loaded (eager, contiguous, float32)."""
    model = checkpoint.model.to(device=device, dtype=torch.float32).eval()
    return PlannedModel(model, ExecutionPlan(str(device), "float32", "contiguous", 0, False, 0))


def _batched(planned: PlannedModel, method: str, inputs: torch.Tensor, batch: int = 500) -> Any:
    function = planned.method(method)
    pieces = [planned.run(function, inputs[start : start + batch]) for start in range(0, len(inputs), batch)]
    if isinstance(pieces[0], tuple):
        return tuple(torch.cat([piece[i] for piece in pieces]).cpu() for i in range(len(pieces[0])))
    return torch.cat(pieces).cpu()


def _mnist_subset(context: EvaluationContext, subset: GuardSubset) -> torch.Tensor:
    indices = context.seeded_subset(len(context.test.images), subset.mnist_images, subset.seed)
    return context.test.images[indices]


def _psnr_delta(reference: torch.Tensor, reduced: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    before = psnr(reference.clamp(0, 1), clean).mean().item()
    after = psnr(reduced.clamp(0, 1), clean).mean().item()
    return {"psnr_float32_db": round(before, 4), "psnr_delta_db": round(after - before, 4)}


def _image_task(
    task: str, checkpoint: Checkpoint, context: EvaluationContext, subset: GuardSubset
) -> Callable[[PlannedModel], Any]:
    """A function scoring one planned model on the task: -> its raw outputs, compared afterwards."""
    clean = _mnist_subset(context, subset)
    if task == "denoise":
        noisy = gaussian_noise(clean, subset.denoise_sigma, clip=True, seed=subset.seed)
        return lambda planned: _batched(planned, "denoise", noisy)
    if task == "super-resolve":
        small = downscale(clean, int(checkpoint.card.scale or 2), method="area")
        return lambda planned: _batched(planned, "super_resolve", small)
    return lambda planned: _batched(planned, "reconstruct", clean)


def _denoiser(planned: PlannedModel, sigma: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's denoise method on images alone; a denoiser that takes the noise level (FFDNet) is told `sigma`."""
    if isinstance(planned.model, NoiseLevelDenoiser):
        denoise_at = planned.model.denoise_at
        return lambda images: denoise_at(images, torch.tensor([sigma]).expand(images.shape[0]))
    return planned.method("denoise")


def _channels(checkpoint: Checkpoint) -> int:
    """Channels to feed a model of photographs: 1 where it reads grayscale and colour alike, else its card's."""
    return 1 if checkpoint.model.reads_grayscale_and_colour else checkpoint.card.input.channels


def _natural_scores(
    task: str, checkpoint: Checkpoint, context: EvaluationContext, subset: GuardSubset
) -> Callable[[PlannedModel], float]:
    """A function scoring one planned model on the first photographs: -> its mean PSNR (dB)."""
    if task == "denoise":
        images = load_images(context.natural_data_dir / "BSD68")[: subset.natural_images]
        sigma = checkpoint.card.architecture_config.get("noise_sigma") or 25
        generator = noise_generator(context.settings.natural_noise_seed)
        channels = _channels(checkpoint)  # a colour network gets the grayscale photographs as RGB
        pairs = [(to_tensor(image.pixels).expand(-1, channels, -1, -1), None) for image in images]
        noisy = [awgn(clean, sigma, generator) for clean, _ in pairs]

        def denoise(planned: PlannedModel) -> float:
            function = _denoiser(planned, float(sigma))
            scores = [
                psnr_255(quantise(planned.run(function, image).cpu()), clean)
                for image, (clean, _) in zip(noisy, pairs, strict=True)
            ]
            return statistics.fmean(scores)

        return denoise
    scale = int(checkpoint.card.scale or 2)
    highs = [luminance(modcrop(image.pixels, scale)) for image in load_images(context.natural_data_dir / "Set5")]
    highs = highs[: subset.natural_images]

    def super_resolve(planned: PlannedModel) -> float:
        function = planned.method("upscale_luminance")
        scores = [psnr_y(planned.run(function, bicubic_downscale(high, scale)).cpu(), high, scale) for high in highs]
        return statistics.fmean(scores)

    return super_resolve


def _embedding_figures(
    checkpoint: Checkpoint, context: EvaluationContext, subset: GuardSubset, reference: PlannedModel
) -> Callable[[PlannedModel], dict[str, float]]:
    index = context.seeded_subset(len(context.train.images), subset.embedding_index, subset.seed)
    index_images, index_labels = context.train.images[index], context.train.labels[index]
    queries_index = context.seeded_subset(len(context.test.images), subset.mnist_images, subset.seed)
    queries, query_labels = context.test.images[queries_index], context.test.labels[queries_index]
    k = context.settings.knn_neighbours

    def vectors(planned: PlannedModel) -> tuple[torch.Tensor, torch.Tensor]:
        return _batched(planned, "embed", index_images), _batched(planned, "embed", queries)

    reference_index, reference_queries = vectors(reference)
    reference_accuracy = knn_accuracy(reference_index, index_labels, reference_queries, query_labels, k)

    def figures(planned: PlannedModel) -> dict[str, float]:
        index_vectors, query_vectors = vectors(planned)
        accuracy = knn_accuracy(index_vectors, index_labels, query_vectors, query_labels, k)
        cosine = torch.nn.functional.cosine_similarity(
            torch.cat([index_vectors, query_vectors]).double(),
            torch.cat([reference_index, reference_queries]).double(),
            dim=1,
        )
        return {
            "knn_accuracy_float32": round(reference_accuracy, 4),
            "knn_accuracy_drop": round(reference_accuracy - accuracy, 4),
            "cosine_similarity": round(cosine.mean().item(), 6),
            "cosine_similarity_min": round(cosine.min().item(), 6),
        }

    return figures


def _vae_nll(context: EvaluationContext, subset: GuardSubset) -> Callable[[PlannedModel], float]:
    indices = context.seeded_subset(len(context.test.images), subset.vae_images, subset.seed)
    binary = torch.bernoulli(context.test.images[indices], generator=torch.Generator().manual_seed(subset.seed))

    def nll(planned: PlannedModel) -> float:
        model = planned.model
        assert isinstance(model, ConvVAE)
        generator = torch.Generator().manual_seed(subset.seed)  # the same draws for every precision

        def bounds(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return importance_sampled_bounds(model, images, subset.vae_samples, generator)

        total = 0.0
        for start in range(0, len(binary), 50):
            _, per_image, _ = planned.run(bounds, binary[start : start + 50])
            total += per_image.sum().item()
        return total / len(binary)

    return nll


def _speed(planned: PlannedModel, checkpoint: Checkpoint, subset: GuardSubset) -> float:
    """Images per second (MNIST: a batch of `speed_batch`) or megapixels per second (photographs: one tile)."""
    natural = checkpoint.card.input.domain == "natural"
    if natural:
        side = subset.speed_tile
        inputs = torch.rand(1, _channels(checkpoint), side, side, generator=torch.Generator().manual_seed(0))
        method = "denoise" if "denoise" in checkpoint.card.tasks else "super_resolve"
    else:
        scale = int(checkpoint.card.scale or 1) if "super-resolve" in checkpoint.card.tasks else 1
        side = 28 // scale
        inputs = torch.rand(subset.speed_batch, checkpoint.card.input.channels, side, side)
        method = {"denoise": "denoise", "super-resolve": "super_resolve", "embed": "embed"}.get(
            checkpoint.card.tasks[0], "reconstruct"
        )
    function = _denoiser(planned, 25.0) if method == "denoise" else planned.method(method)
    planned.run(function, inputs)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        planned.run(function, inputs)
        timings.append(time.perf_counter() - started)
    seconds = min(timings)
    return inputs[:, 0].numel() / 1e6 / seconds if natural else len(inputs) / seconds


def measure_precision(
    checkpoint: Checkpoint,
    context: EvaluationContext,
    command: str,
    machine: str,
    subset: GuardSubset | None = None,
    precisions: tuple[Precision, ...] | None = None,
) -> dict[str, Any]:
    """{precision: figures} for every reduced precision native to the context's device (or `precisions`)."""
    subset = subset or GuardSubset()
    device = context.device
    if precisions is None:
        precisions = tuple(p for p in REDUCED_PRECISIONS if p in native_precisions(device))
    card = checkpoint.card
    natural = card.input.domain == "natural"
    reference = eager_float32(checkpoint, device)
    float32_speed = _speed(planned_copy(checkpoint, device, "float32"), checkpoint, subset)
    speed_key = "speed_megapixels_per_s" if natural else "speed_images_per_s"
    results: dict[str, Any] = {}
    for precision in precisions:
        started = time.perf_counter()
        planned = planned_copy(checkpoint, device, precision)
        figures: dict[str, Any] = {}
        deltas: list[float] = []
        for task in card.tasks:
            if natural:
                score = _natural_scores(task, checkpoint, context, subset)
                before, after = score(reference), score(planned)
                figures[task] = {"psnr_float32_db": round(before, 4), "psnr_delta_db": round(after - before, 4)}
                deltas.append(after - before)
            elif task in ("denoise", "super-resolve", "reconstruct"):
                run = _image_task(task, checkpoint, context, subset)
                clean = _mnist_subset(context, subset)
                figures[task] = _psnr_delta(run(reference), run(planned), clean)
                deltas.append(figures[task]["psnr_delta_db"])
            elif task == "embed":
                figures[task] = _embedding_figures(checkpoint, context, subset, reference)(planned)
            elif task == "vae":
                nll = _vae_nll(context, subset)
                before, after = nll(reference), nll(planned)
                figures[task] = {"nll_float32_nats": round(before, 4), "nll_rise_nats": round(after - before, 4)}
        entry: dict[str, Any] = {}
        if deltas:
            entry["psnr_delta_db"] = round(min(deltas), 4)  # the worst task decides
        if "embed" in figures:
            entry["knn_accuracy_drop"] = figures["embed"]["knn_accuracy_drop"]
            entry["cosine_similarity"] = figures["embed"]["cosine_similarity"]
        if "vae" in figures:
            entry["nll_rise_nats"] = figures["vae"]["nll_rise_nats"]
        entry[speed_key] = round(_speed(planned, checkpoint, subset), 3 if natural else 1)
        entry[f"float32_{speed_key}"] = round(float32_speed, 3 if natural else 1)
        refusal = guard_verdict({"precision": {precision: entry}}, precision)
        entry["within_tolerance"] = refusal is None
        entry["tolerances"] = {
            "psnr_drop_db": TOLERANCES.psnr_drop_db,
            "nll_rise_nats": TOLERANCES.nll_rise_nats,
            "knn_accuracy_drop": TOLERANCES.knn_accuracy_drop,
            "min_cosine_similarity": TOLERANCES.min_cosine_similarity,
        }
        entry["tasks"] = figures
        entry["subset"] = _describe_subset(card.tasks, natural, subset)
        entry["measured"] = {
            "command": command,
            "machine": machine,
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "seconds": round(time.perf_counter() - started, 1),
        }
        results[precision] = entry
    return results


def _describe_subset(tasks: list[str], natural: bool, subset: GuardSubset) -> str:
    if natural:
        folder = "BSD68 (AWGN at the model's sigma, seed 0)" if "denoise" in tasks else "Set5 (Y, bicubic x scale)"
        tile = f"{subset.speed_tile}x{subset.speed_tile}"
        return f"the first {subset.natural_images} images of {folder}; speed: one {tile} tile"
    parts = [f"{subset.mnist_images} MNIST test digits (seeded subset {subset.seed})"]
    if "embed" in tasks:
        parts.append(f"a 5-NN index of {subset.embedding_index} training digits")
    if "vae" in tasks:
        parts.append(f"NLL on {subset.vae_images} binarised digits x {subset.vae_samples} importance samples")
    return "; ".join(parts) + f"; speed: batches of {subset.speed_batch}"
