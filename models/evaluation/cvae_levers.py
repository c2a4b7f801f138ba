"""Which standard lever makes the conditional VAE's samples read as the digit asked for: each one trained at the
same budget and scored by the card's protocol (models.evaluation.mnist.sample_quality): 10,000 samples, 1,000 per
label, z ~ N(0, I), decoder means, seed 0, read by the shipped mnist-classifier; the Fréchet distance of its
features to the 10,000 test digits; and the card's validation check, the negative ELBO given the label on
the first 1,000 held-out training digits (models.training.validation; the ELBO even where a lever trains
another loss).

    python -m models.evaluation.cvae_levers --data-dir ../shared/datasets/mnist --epochs 4 --threads 1 \
        --out docs/cvae-levers.json [--only baseline every-layer]

Levers are variants of the `mnist-cvae` recipe (models.training.recipes). Nothing here writes a checkpoint:
a lever worth shipping becomes the recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from models.architectures import ConditionalConvVAE, DigitClassifier
from models.checkpoint import load_checkpoint
from models.data.mnist import load_mnist
from models.evaluation.mnist.sample_quality import (
    SAMPLES,
    conditional_samples,
    frechet_distance,
    judge,
    load_classifier,
)
from models.training.loop import TrainOptions, train
from models.training.mnist import TrainingData
from models.training.objectives import LabelledElbo
from models.training.recipes import RECIPES, Recipe
from models.training.validation import ValidationData, check_conditional_vae

BASE = RECIPES["mnist-cvae"]
# The baseline every lever changes one thing of: the first published mnist-cvae (label into the decoder's input
# only, 8-d latent, the full KL from the first step), whatever the recipe says now.
BASELINE_CONFIG: dict[str, Any] = {"latent_size": 8, "classes": 10, "widths": (32, 64), "hidden_size": 256}
SHIPPED = Path("checkpoints/mnist-cvae")


def lever_recipes(epochs: int) -> dict[str, Recipe]:
    """name -> the recipe it trains (for `epochs`)."""

    def variant(changes: dict[str, Any], objective: LabelledElbo | None = None) -> Recipe:
        config = {**BASELINE_CONFIG, **changes}
        return dataclasses.replace(
            BASE, architecture_config=config, objective=objective or LabelledElbo(), epochs=epochs
        )

    every: dict[str, Any] = {"label_every_layer": True}
    return {
        "baseline": variant({}),
        "every-layer": variant(every),
        "every-layer-latent-4": variant({**every, "latent_size": 4}),
        "every-layer-latent-2": variant({**every, "latent_size": 2}),
        "every-layer-latent-16": variant({**every, "latent_size": 16}),
        "latent-4": variant({"latent_size": 4}),
        "every-layer-kl-warm-up": variant(every, LabelledElbo(kl_warmup_epochs=epochs / 4)),
        "every-layer-beta-1.5": variant(every, LabelledElbo(kl_beta=1.5)),
        "every-layer-wider": variant({**every, "widths": (64, 128), "hidden_size": 512}),
        "class-mmd-100": variant({}, LabelledElbo(class_mmd_weight=100.0)),
        "every-layer-class-mmd-100": variant(every, LabelledElbo(class_mmd_weight=100.0)),
        "every-layer-class-mmd-1000": variant(every, LabelledElbo(class_mmd_weight=1000.0)),
        "every-layer-latent-4-class-mmd-100": variant(
            {**every, "latent_size": 4}, LabelledElbo(class_mmd_weight=100.0)
        ),
    }


@torch.no_grad()
def score(model: ConditionalConvVAE, classifier: DigitClassifier, test_features: torch.Tensor) -> dict[str, Any]:
    """The card's sample-quality figures of one conditional model."""
    labels = torch.arange(model.classes).repeat_interleave(SAMPLES // model.classes)
    features, predictions = judge(classifier, conditional_samples(model.eval(), labels, seed=0))
    correct = predictions == labels
    return {
        "label_accuracy": round(float(correct.float().mean()), 4),
        "label_accuracy_per_label": {
            str(label): round(float(correct[labels == label].float().mean()), 3) for label in range(model.classes)
        },
        "frechet_distance": round(frechet_distance(features, test_features), 2),
    }


def markdown_table(results: dict[str, Any]) -> str:
    """The JSON's rows as a markdown table, with the hardest label of each row."""
    lines = [
        "| lever | epochs | label accuracy | worst label | Fréchet distance | -ELBO given label (nats) | minutes |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for name, row in results.items():
        per_label = row["label_accuracy_per_label"]
        worst = min(per_label, key=per_label.get)
        epochs = row.get("epochs", name.rsplit("(", 1)[-1].split()[0])
        lines.append(
            f"| {name.split(' (')[0]} | {epochs} | {row['label_accuracy']:.2%} | {worst}: {per_label[worst]:.1%} | "
            f"{row['frechet_distance']:.1f} | {row['validation_negative_elbo_nats']:.2f} | {row['train_minutes']} |"
        )
    return "\n".join(lines) + "\n"


def negative_elbo(model: ConditionalConvVAE, held_out: ValidationData) -> float:
    """The card's validation figure: -ELBO given the label, nats, on the first 1,000 held-out digits (seed 0)."""
    figures = check_conditional_vae(model, held_out, torch.device("cpu"))
    return round(figures["cvae_negative_elbo_given_label_nats"], 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.evaluation.cvae_levers", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="+", metavar="LEVER")
    parser.add_argument("--out", type=Path, default=Path("docs/cvae-levers.json"))
    parser.add_argument("--table", action="store_true", help="print the JSON's rows as a markdown table and exit")
    arguments = parser.parse_args(argv)
    if arguments.table:
        print(markdown_table(json.loads(arguments.out.read_text())), end="")
        return 0
    torch.set_num_threads(arguments.threads)
    results: dict[str, Any] = json.loads(arguments.out.read_text()) if arguments.out.is_file() else {}
    classifier = load_classifier(Path("checkpoints"), torch.device("cpu"))
    test_features = judge(classifier, load_mnist(arguments.data_dir, "test").images)[0]
    digits = TrainingData.hold_out(load_mnist(arguments.data_dir, "train"))
    no_index = digits.train_images[:0], digits.train_labels[:0]  # the k-NN index is not read by this check
    held_out = ValidationData(digits.validation_images, digits.validation_labels, *no_index)
    shipped = load_checkpoint(SHIPPED)
    assert isinstance(shipped.model, ConditionalConvVAE)
    shipped_name = (
        f"shipped mnist-cvae ({shipped.card.training['epochs']} epochs, weights {shipped.card.weights_sha256[:8]})"
    )
    results[shipped_name] = {
        **score(shipped.model, classifier, test_features),
        "validation_negative_elbo_nats": negative_elbo(shipped.model, held_out),
        "train_minutes": round(shipped.card.training["duration_s"] / 60, 1),
        "architecture_config": shipped.model.config_dict(),
    }
    data = digits.with_label_planes()
    for name, recipe in lever_recipes(arguments.epochs).items():
        if arguments.only and name not in arguments.only:
            continue
        started = time.perf_counter()
        result = train(recipe, data, TrainOptions(epochs=arguments.epochs, stream=io.StringIO()))
        minutes = (time.perf_counter() - started) / 60
        assert isinstance(result.model, ConditionalConvVAE)
        figures = score(result.model, classifier, test_features)
        key = f"{name} ({arguments.epochs} epochs)"
        results[key] = {
            **figures,
            "validation_negative_elbo_nats": negative_elbo(result.model, held_out),
            "validation_losses": [round(loss, 2) for loss in result.validation_losses],
            "selected_epoch": result.selected_epoch,
            "epochs": arguments.epochs,
            "train_minutes": round(minutes, 1),
            "images_per_second": round(result.images_per_second, 1),
            "architecture_config": result.model.config_dict(),
            "objective": recipe.objective.describe(),
        }
        print(
            f"{name}: label accuracy {figures['label_accuracy']:.2%}, Fréchet {figures['frechet_distance']:.1f}, "
            f"-ELBO {results[key]['validation_negative_elbo_nats']:.2f}, {minutes:.1f} min",
            file=sys.stderr,
            flush=True,
        )
        arguments.out.write_text(json.dumps(results, indent=2) + "\n")
    arguments.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
