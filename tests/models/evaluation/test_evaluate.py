"""The evaluator end to end on tiny generated MNIST-like IDX files and tiny untrained checkpoints,
plus exact checks of the VAE likelihood estimates."""

from __future__ import annotations

import copy
import gzip
import math
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from models.architectures import (
    ConvAutoencoder,
    ConvAutoencoderConfig,
    ConvVAE,
    ConvVAEConfig,
    SuperResolutionAE,
    SuperResolutionAEConfig,
)
from models.checkpoint import InputSpec, ModelCard, card_tasks, load_checkpoint, read_card, save_checkpoint, sha256_of
from models.data.mnist import MNIST_FILES
from models.evaluate import main
from models.evaluation import TASK_EVALUATIONS, EvaluationContext, EvaluationSettings, evaluate_checkpoints
from models.evaluation.mnist.embedding import knn_accuracy, linear_probe_accuracy
from models.evaluation.mnist.vae import importance_sampled_bounds
from models.evaluation.precision import GuardSubset, measure_precision
from models.runtime.execution import TOLERANCES
from models.runtime.machine import native_precisions
from models.training.validation import importance_sampled_nll

SMALL = EvaluationSettings(
    bm3d_subset_size=2,
    blur_tuning_images=20,
    index_size=120,
    probe_iterations=5,
    importance_samples=6,
    vae_chunk_images=7,  # does not divide the 40 test digits: the last chunk is short
    manifold_grid=3,
    batch_size=16,
)


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic (0, 0, 0x08, ndim), big-endian sizes, then the data."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def digit_like(labels: np.ndarray, seed: int) -> np.ndarray:
    """A bright blob whose position depends on the label, plus noise: (N, 28, 28) uint8."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:28, 0:28]
    centres = np.stack([8 + (labels % 5) * 3, 8 + (labels // 5) * 10], axis=1) + rng.normal(0, 1, (len(labels), 2))
    blobs = np.exp(-((rows - centres[:, 0, None, None]) ** 2 + (columns - centres[:, 1, None, None]) ** 2) / 12)
    return np.clip(255 * blobs + rng.normal(0, 10, blobs.shape), 0, 255).astype(np.uint8)


def write_tiny_mnist(directory: Path, train: int = 240, test: int = 40) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for split, count, seed in (("train", train, 0), ("test", test, 1)):
        labels = (np.arange(count) % 10).astype(np.uint8)
        for kind, array in (("images", digit_like(labels, seed)), ("labels", labels)):
            stem, _ = MNIST_FILES[f"{split}-{kind}"]
            (directory / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(array)))


def write_tiny_checkpoints(directory: Path) -> None:
    torch.manual_seed(0)
    autoencoder = ConvAutoencoder(ConvAutoencoderConfig(widths=(2, 2, 2), latent_size=4))
    denoiser = ConvAutoencoder(ConvAutoencoderConfig(widths=(2, 2, 2)))
    upscaler = SuperResolutionAE(SuperResolutionAEConfig(scale=2, width=4, encoder_layers=1))
    vae = ConvVAE(ConvVAEConfig(latent_size=3, widths=(4, 4), hidden_size=8))
    vae_2d = ConvVAE(ConvVAEConfig(latent_size=2, widths=(4, 4), hidden_size=8))
    tiny = [
        ("mnist-ae", ["reconstruct", "embed"], autoencoder, None, 28),
        ("mnist-denoise", ["denoise"], denoiser, None, 28),
        ("mnist-sr-x2", ["super-resolve"], upscaler, 2, 14),
        ("mnist-vae", ["vae"], vae, None, 28),
        ("tiny-vae-2d", ["vae", "embed"], vae_2d, None, 28),
    ]
    for name, tasks, model, scale, size in tiny:
        card = ModelCard(
            name=name,
            tasks=tasks,
            architecture=model.name,
            architecture_config=model.config_dict(),
            input=InputSpec(channels=1, height=size, width=size),
            scale=scale,
            description=f"tiny untrained {name}",
            training={"recipe": "none (random weights)", "epochs": 0, "validation_losses": list(range(20))},
        )
        save_checkpoint(model.eval(), card, directory / name)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("evaluation")
    write_tiny_mnist(root / "mnist")
    write_tiny_checkpoints(root / "checkpoints")
    hashes = {path.name: sha256_of(path / "model.safetensors") for path in (root / "checkpoints").iterdir()}
    context = EvaluationContext(data_dir=root / "mnist", figures_dir=root / "docs", settings=SMALL, verify_data=False)
    report = root / "docs" / "model-report.md"
    cards = evaluate_checkpoints(root / "checkpoints", context, report, "python -m models.evaluate (test)")
    return {"root": root, "cards": cards, "report": report, "hashes": hashes}


def scores_are_sane(scores: dict[str, float]) -> None:
    assert math.isfinite(scores["psnr"]) and scores["psnr"] > 0
    assert -1.0 <= scores["ssim"] <= 1.0


def test_every_task_has_an_evaluation() -> None:
    assert set(TASK_EVALUATIONS) == set(card_tasks())


def test_metrics_are_written_into_every_card_and_weights_are_untouched(evaluated: dict[str, Any]) -> None:
    root = evaluated["root"]
    for name, sha in evaluated["hashes"].items():
        card = read_card(root / "checkpoints" / name)
        assert set(card.metrics) == {*card.tasks, "evaluation"}
        assert card.metrics["evaluation"]["settings"]["importance_samples"] == SMALL.importance_samples
        assert card.weights_sha256 == sha == sha256_of(root / "checkpoints" / name / "model.safetensors")
        load_checkpoint(root / "checkpoints" / name)  # still verifies


def test_denoising_compares_every_baseline_on_the_same_noisy_images(evaluated: dict[str, Any]) -> None:
    metrics = evaluated["cards"]["mnist-denoise"].metrics["denoise"]
    assert set(metrics["noise"]) == {"0.25", "0.5"}
    for sigma, result in metrics["noise"].items():
        assert result["test_set"]["images"] == 40 and result["bm3d_subset"]["images"] == 2
        assert set(result["test_set"]["scores"]) == {"model", "noisy input", "median 3x3", "gaussian blur"}
        assert set(result["bm3d_subset"]["scores"]) == {"model", "noisy input", "median 3x3", "gaussian blur", "bm3d"}
        assert result["gaussian_blur_sigma"] in SMALL.blur_sigma_candidates, sigma
        for scores in (*result["test_set"]["scores"].values(), *result["bm3d_subset"]["scores"].values()):
            scores_are_sane(scores)
    noisier = metrics["noise"]["0.5"]["test_set"]["scores"]["noisy input"]["psnr"]
    assert noisier < metrics["noise"]["0.25"]["test_set"]["scores"]["noisy input"]["psnr"]
    # The target is the smallest margin over any baseline (BM3D compared on its subset).
    at_half = metrics["noise"]["0.5"]
    full, subset = at_half["test_set"]["scores"], at_half["bm3d_subset"]["scores"]
    margins = [full["model"]["psnr"] - full[name]["psnr"] for name in ("noisy input", "median 3x3", "gaussian blur")]
    margins.append(subset["model"]["psnr"] - subset["bm3d"]["psnr"])
    target = metrics["target"]
    assert target["margin_db"] == pytest.approx(min(margins), abs=1e-3)
    assert target["met"] == (min(margins) >= 4.0)


def test_super_resolution_is_compared_with_nearest_and_bicubic(evaluated: dict[str, Any]) -> None:
    metrics = evaluated["cards"]["mnist-sr-x2"].metrics["super-resolve"]
    assert metrics["scale"] == 2 and metrics["images"] == 40
    scores = metrics["scores"]
    assert set(scores) == {"model", "nearest", "bicubic"}
    for value in scores.values():
        scores_are_sane(value)
    assert scores["bicubic"]["psnr"] > scores["nearest"]["psnr"]  # smooth blobs: bicubic beats nearest
    margin = scores["model"]["psnr"] - scores["bicubic"]["psnr"]
    assert metrics["target"]["margin_db"] == pytest.approx(margin, abs=1e-3)


def test_embeddings_and_reconstructions_are_compared_with_pca(evaluated: dict[str, Any]) -> None:
    ae = evaluated["cards"]["mnist-ae"].metrics
    assert set(ae["embed"]["scores"]) == {"model", "pca-4"}
    for scores in ae["embed"]["scores"].values():
        assert 0.0 <= scores["knn_accuracy"] <= 1.0 and 0.0 <= scores["linear_probe_accuracy"] <= 1.0
    # Label-dependent blobs are easy for PCA's nearest neighbours.
    assert ae["embed"]["scores"]["pca-4"]["knn_accuracy"] > 0.5
    assert "target" in ae["embed"]
    reconstruction = ae["reconstruct"]["scores"]
    assert set(reconstruction) == {"model", "pca-4"}
    for scores in reconstruction.values():
        scores_are_sane(scores)
        assert scores["mse"] > 0
    vae_2d = evaluated["cards"]["tiny-vae-2d"].metrics["embed"]
    assert vae_2d["dimensions"] == 2 and "target" not in vae_2d  # the k-NN target is set for mnist-ae only


def test_vae_likelihoods_and_figures(evaluated: dict[str, Any]) -> None:
    metrics = evaluated["cards"]["mnist-vae"].metrics["vae"]
    scores = metrics["scores"]
    assert metrics["images"] == 40 and metrics["importance_samples"] == 6
    # An untrained VAE sits near 784 log 2 = 543 nats; the IS bound is at most the ELBO bound (up to noise).
    assert 300 < scores["importance_sampled_nll_nats"] < 800
    assert scores["importance_sampled_nll_nats"] <= scores["negative_elbo_nats"] + 1.0
    assert scores["kl_nats"] >= 0
    assert metrics["target"]["met"] is False
    assert set(metrics["figures"]) == {"samples"}
    figures = evaluated["cards"]["tiny-vae-2d"].metrics["vae"]["figures"]
    assert set(figures) == {"samples", "latent_means", "manifold"}
    for path in figures.values():
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 50
    assert "target" not in evaluated["cards"]["tiny-vae-2d"].metrics["vae"]


def test_the_report_shows_every_model_and_the_honest_verdicts(evaluated: dict[str, Any]) -> None:
    text = evaluated["report"].read_text()
    assert text.startswith("# Model report")
    assert "python -m models.evaluate (test)" in text.splitlines()[2]
    for name in evaluated["hashes"]:
        assert f"## {name}" in text
    nll = evaluated["cards"]["mnist-vae"].metrics["vae"]["scores"]["importance_sampled_nll_nats"]
    assert f"| mnist-vae | vae | importance-sampled NLL <= 90.0 nats | {nll:.2f} nats | **no** |" in text
    assert "](tiny-vae-2d-manifold.png)" in text  # figures linked relative to the report
    for name in ("mnist-denoise", "mnist-sr-x2"):
        assert f"]({name}-examples.png)" in text
        with Image.open(evaluated["root"] / "docs" / f"{name}-examples.png") as image:
            assert image.format == "PNG"
    assert "20 values" in text  # long training lists are summarised


def test_evaluation_is_deterministic(evaluated: dict[str, Any], tmp_path: Path) -> None:
    root = evaluated["root"]
    shutil.copytree(root / "checkpoints" / "mnist-denoise", tmp_path / "checkpoints" / "mnist-denoise")
    shutil.copytree(root / "checkpoints" / "mnist-vae", tmp_path / "checkpoints" / "mnist-vae")
    context = EvaluationContext(data_dir=root / "mnist", figures_dir=tmp_path, settings=SMALL, verify_data=False)
    again = evaluate_checkpoints(tmp_path / "checkpoints", context, None, "again")
    for name in again:
        first, second = copy.deepcopy(evaluated["cards"][name].metrics), copy.deepcopy(again[name].metrics)
        for metrics in (first, second):
            metrics.pop("evaluation")
            for task_metrics in metrics.values():
                task_metrics.pop("figures", None)  # paths differ between the two runs
        assert first == second, name


def test_report_only_rewrites_the_report_from_the_cards_alone(evaluated: dict[str, Any], tmp_path: Path) -> None:
    root = evaluated["root"]
    cards_before = {path.name: (path / "config.json").read_text() for path in (root / "checkpoints").iterdir()}
    report = tmp_path / "report.md"
    argv = ["--data-dir", str(tmp_path / "no-mnist-here"), "--checkpoints", str(root / "checkpoints")]
    assert main([*argv, "--report", str(report), "--report-only"]) == 0
    text = report.read_text()
    assert "--report-only" in text.splitlines()[2]  # the header names the command that wrote it
    for name, card_text in cards_before.items():
        assert f"## {name}" in text
        assert (root / "checkpoints" / name / "config.json").read_text() == card_text  # nothing re-evaluated


def test_only_refuses_unknown_names(evaluated: dict[str, Any]) -> None:
    root = evaluated["root"]
    with pytest.raises(ValueError, match="no checkpoint named"):
        main(["--data-dir", str(root / "mnist"), "--checkpoints", str(root / "checkpoints"), "--only", "nope"])


def exact_posterior_vae(pixel_logit: float) -> ConvVAE:
    """A VAE whose q(z|x) is the prior and whose decoder ignores z: log p(x) is known in closed form."""
    model = ConvVAE(ConvVAEConfig(latent_size=3, widths=(4, 4), hidden_size=8))
    with torch.no_grad():
        for layer in (model.to_mean, model.to_log_variance):
            layer.weight.zero_()
            layer.bias.zero_()
        last = model.decoder[-1]
        assert isinstance(last, torch.nn.ConvTranspose2d) and last.bias is not None
        last.weight.zero_()
        last.bias.fill_(pixel_logit)
    return model.eval()


def test_importance_sampling_is_exact_when_the_posterior_is_exact() -> None:
    model = exact_posterior_vae(pixel_logit=-1.0)
    binary = torch.bernoulli(torch.full((5, 1, 28, 28), 0.3), generator=torch.Generator().manual_seed(0))
    on = binary.flatten(1).sum(dim=1)
    p = 1 / (1 + math.exp(1.0))
    expected = -(on * math.log(p) + (784 - on) * math.log(1 - p))
    with torch.no_grad():
        negative_elbo, nll, kl = importance_sampled_bounds(model, binary, 16, torch.Generator().manual_seed(0))
    assert torch.allclose(kl, torch.zeros(5), atol=1e-6)
    assert torch.allclose(nll.double(), expected.double(), rtol=1e-5)
    assert torch.allclose(negative_elbo.double(), expected.double(), rtol=1e-5)


def test_importance_sampling_agrees_with_the_trainers_estimate() -> None:
    torch.manual_seed(1)
    model = ConvVAE(ConvVAEConfig(latent_size=4, widths=(4, 8), hidden_size=16)).eval()
    binary = torch.bernoulli(torch.rand(6, 1, 28, 28), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, ours, _ = importance_sampled_bounds(model, binary, 50, torch.Generator().manual_seed(3))
    theirs = importance_sampled_nll(model, binary, samples=50, generator=torch.Generator().manual_seed(3), chunk=6)
    assert torch.allclose(ours, theirs, rtol=1e-5)


def test_knn_and_linear_probe_on_separable_clusters() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 5, generator=generator) * 10
    labels = torch.arange(200) % 10
    points = centres[labels] + torch.randn(200, 5, generator=generator)
    assert knn_accuracy(points[:150], labels[:150], points[150:], labels[150:], k=5) == 1.0
    assert linear_probe_accuracy(points[:150], labels[:150], points[150:], labels[150:], 50, 1e-4) >= 0.95
    shuffled = labels[torch.randperm(200, generator=generator)]
    assert knn_accuracy(points[:150], shuffled[:150], points[150:], shuffled[150:], k=5) < 0.5


def test_the_quality_guard_of_reduced_precision_is_measured_per_task(evaluated: dict[str, Any]) -> None:
    """measure_precision scores bfloat16 (autocast runs it on any CPU, natively or not) against float32 for
    every task of a card, with the figures the service's guard reads and the command that measured them."""
    root = evaluated["root"]
    context = EvaluationContext(data_dir=root / "mnist", figures_dir=root / "docs", settings=SMALL, verify_data=False)
    subset = GuardSubset(mnist_images=40, embedding_index=60, vae_images=10, vae_samples=5, speed_batch=4)
    figures = {}
    for name in ("mnist-denoise", "mnist-ae", "mnist-vae"):
        checkpoint = load_checkpoint(root / "checkpoints" / name)
        figures[name] = measure_precision(checkpoint, context, "the command", "the machine", subset, ("bfloat16",))
        entry = figures[name]["bfloat16"]
        assert entry["measured"]["command"] == "the command" and entry["speed_images_per_s"] > 0
        # The verdict written beside the figures, recomputed from the figures and the guard's limits here
        # (not by the guard's own function, which the card's reader uses).
        within = [
            entry.get("psnr_delta_db", 0.0) >= -TOLERANCES.psnr_drop_db,
            entry.get("nll_rise_nats", 0.0) <= TOLERANCES.nll_rise_nats,
            entry.get("knn_accuracy_drop", 0.0) <= TOLERANCES.knn_accuracy_drop,
            entry.get("cosine_similarity", 1.0) >= TOLERANCES.min_cosine_similarity,
        ]
        assert entry["within_tolerance"] is all(within), entry
        assert set(entry["tasks"]) == set(checkpoint.card.tasks)
    denoise = figures["mnist-denoise"]["bfloat16"]
    assert denoise["psnr_delta_db"] == min(task["psnr_delta_db"] for task in denoise["tasks"].values())
    # bfloat16 moves PSNR by hundredths of a dB: within the guard's own limit, as on the shipped cards.
    assert abs(denoise["psnr_delta_db"]) <= TOLERANCES.psnr_drop_db, denoise
    embedding = figures["mnist-ae"]["bfloat16"]
    assert TOLERANCES.min_cosine_similarity <= embedding["cosine_similarity"] <= 1.0, embedding
    assert embedding["knn_accuracy_drop"] <= TOLERANCES.knn_accuracy_drop, embedding
    assert abs(figures["mnist-vae"]["bfloat16"]["nll_rise_nats"]) <= TOLERANCES.nll_rise_nats, figures["mnist-vae"]


def test_evaluation_writes_the_guard_into_the_cards_for_the_precisions_this_cpu_runs(evaluated: dict[str, Any]) -> None:
    native = [p for p in ("bfloat16", "float16") if p in native_precisions(torch.device("cpu"))]
    for card in evaluated["cards"].values():
        assert sorted(card.serving["precision"]) == sorted(native)
